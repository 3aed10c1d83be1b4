//! `charm-host is-leader | leader-term | leader-get | leader-set | unit-get | unit-set`: hook
//! tools for scripts and cron jobs, answered by the unit's running agent without waiting
//! behind its hooks (`leader-term` has no Juju equivalent; `unit-get` and `unit-set` follow
//! Juju's `relation-get` and `relation-set` on a peer relation).
//!
//! They behave as Juju's tools do (`docs/juju-compatibility.md` lists every rule and the
//! few deliberate differences): output through Juju's `smart`, `yaml` and `json` formats or
//! into `-o FILE`; errors as one `ERROR <message>` line on stderr; exit 0 on success, 1 when
//! the answer is unknown or the write was refused, 2 on usage errors.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::hook_tools::{self, ToolCallError, ToolErrorKind, ToolRequest, ToolResponse};
use crate::leadership::{BootClock, Clock as _};
use crate::names::UnitName;
use crate::state_dir::StateDir;

use super::OUTCOME_UNKNOWN_EXIT;
use super::USAGE_EXIT as USAGE;
use super::{OutputArgs, ToolArgs};

/// Reports an error as Juju's tools do, and returns the exit code.
fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ERROR {message}");
    ExitCode::from(code)
}

/// Sends `request` to `unit`'s agent under `state`, giving up after `timeout`: an agent never
/// answers behind its hooks, so only a frozen or overloaded one takes long.
pub(super) fn call_agent(
    state: &StateDir,
    unit: &UnitName,
    request: &ToolRequest,
    timeout: Duration,
) -> anyhow::Result<ToolResponse> {
    super::block_on(ask_agent(state, unit, request, timeout))?
}

/// [`call_agent`] inside a runtime.
pub(super) async fn ask_agent(
    state: &StateDir,
    unit: &UnitName,
    request: &ToolRequest,
    timeout: Duration,
) -> anyhow::Result<ToolResponse> {
    let socket = state.socket(unit);
    match hook_tools::call(&socket, request, timeout).await {
        Ok(answer) => Ok(answer),
        Err(ToolCallError::Timeout(_)) => Err(AgentTimeout { unit: unit.clone(), timeout }.into()),
        Err(err) => Err(err.into()),
    }
}

/// An agent that did not answer in time: a request it read may still be applied, up to its
/// deadline (it is never applied after).
#[derive(Debug, thiserror::Error)]
#[error("{unit}'s agent did not answer within {timeout:?} (is it frozen?)")]
struct AgentTimeout {
    unit: UnitName,
    timeout: Duration,
}

/// Sends `request` to the target unit's agent. A refusal becomes `Err((code, message))`,
/// `what` prefixing the agent's own message as Juju's tools word it.
/// A `leader-set` that was sent and not answered (its outcome is unknown) exits
/// [`OUTCOME_UNKNOWN_EXIT`], never 1: 1 says nothing was written.
fn ask(target: &ToolArgs, request: ToolRequest, what: &str) -> Result<ToolResponse, (u8, String)> {
    let write = matches!(request, ToolRequest::LeaderSet { .. } | ToolRequest::UnitSet { .. });
    let leader_set = matches!(request, ToolRequest::LeaderSet { .. });
    match call_agent(&StateDir::new(&target.state), &target.unit, &request, target.timeout) {
        Ok(ToolResponse::Error { kind: ToolErrorKind::NotLeader, message }) if leader_set => {
            Err((1, format!("{what}cannot write settings: {message}")))
        }
        Ok(ToolResponse::Error { kind: ToolErrorKind::OutcomeUnknown, message }) => {
            Err((OUTCOME_UNKNOWN_EXIT, format!("{what}{message}")))
        }
        Ok(ToolResponse::Error { message, .. }) => Err((1, format!("{what}{message}"))),
        Ok(response) => Ok(response),
        Err(err) if write && err.downcast_ref::<AgentTimeout>().is_some() => Err((
            OUTCOME_UNKNOWN_EXIT,
            format!("{what}{err}: the write may or may not have been applied (read the settings to find out)"),
        )),
        Err(err) => Err((1, err.to_string())),
    }
}

/// Sends `request` like [`ask`] for an operator action, printing any error.
pub(super) fn act(target: &ToolArgs, request: ToolRequest) -> Result<ToolResponse, ExitCode> {
    match call_agent(&StateDir::new(&target.state), &target.unit, &request, target.timeout) {
        Ok(ToolResponse::Error { message, .. }) => Err(fail(1, message)),
        Ok(response) => Ok(response),
        Err(err) => Err(fail(1, err)),
    }
}

/// Juju's output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Smart,
    Json,
    Yaml,
}

/// What a tool prints, before formatting.
enum Value {
    Bool(bool),
    Number(u64),
    Text(Option<String>),
    Map(Vec<(String, String)>),
}

impl Format {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "smart" => Ok(Format::Smart),
            "json" => Ok(Format::Json),
            "yaml" => Ok(Format::Yaml),
            other => Err(format!("invalid value {other:?} for option --format: unknown format {other:?}")),
        }
    }

    /// The bytes Juju's formatter prints for `value`: smart prints booleans as `True` and
    /// strings raw, and nothing for an absent or empty string; yaml prints nothing for an
    /// absent value; json prints `null` for it. Every non-empty output ends in a newline.
    fn render(self, value: &Value) -> String {
        let line = |text: String| if text.is_empty() { text } else { text + "\n" };
        match (self, value) {
            (_, Value::Number(n)) => line(n.to_string()),
            (Format::Smart, Value::Bool(b)) => line(if *b { "True" } else { "False" }.into()),
            (Format::Json | Format::Yaml, Value::Bool(b)) => line(b.to_string()),
            (Format::Smart, Value::Text(text)) => line(text.clone().unwrap_or_default()),
            (Format::Yaml, Value::Text(None)) => String::new(),
            (Format::Yaml, Value::Text(Some(text))) => line(yaml_scalar(text)),
            (Format::Json, Value::Text(text)) => line(serde_json::json!(text).to_string()),
            (Format::Json, Value::Map(map)) => {
                let object: serde_json::Map<String, serde_json::Value> =
                    map.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
                line(serde_json::Value::Object(object).to_string())
            }
            (Format::Smart | Format::Yaml, Value::Map(map)) if map.is_empty() => line("{}".into()),
            (Format::Smart | Format::Yaml, Value::Map(map)) => {
                map.iter().map(|(key, value)| format!("{}: {}\n", yaml_scalar(key), yaml_scalar(value))).collect()
            }
        }
    }
}

/// Prints `value` in the format the options ask for, to stdout or to `-o FILE` (created or
/// truncated even when there is nothing to write, as Juju does).
fn print(output: &OutputArgs, format: Format, value: &Value) -> ExitCode {
    let text = format.render(value);
    match &output.output {
        None => {
            out!("{text}");
            ExitCode::SUCCESS
        }
        Some(path) => match write_file(path, &text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail(1, format!("{}: {err}", path.display())),
        },
    }
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(text.as_bytes())
}

/// Go's `%q` of a list of strings, as Juju's messages print extra arguments: `["a" "b"]`.
fn quoted_list(args: &[String]) -> String {
    let items: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", items.join(" "))
}

/// `is-leader`: `True`/`False` (smart) or `true`/`false` (json, yaml).
pub fn is_leader(target: ToolArgs, output: OutputArgs, args: Vec<String>) -> ExitCode {
    let format = match Format::parse(&output.format) {
        Ok(format) => format,
        Err(message) => return fail(USAGE, message),
    };
    if !args.is_empty() {
        return fail(USAGE, format!("unrecognized args: {}", quoted_list(&args)));
    }
    match ask(&target, ToolRequest::IsLeader, "leadership status unknown: ") {
        // Judged as late as possible: right before it is printed.
        Ok(answer) => match answer.leadership(BootClock.now()) {
            Ok(leader) => print(&output, format, &Value::Bool(leader)),
            Err(message) => fail(1, format!("leadership status unknown: {message}")),
        },
        Err((code, message)) => fail(code, message),
    }
}

/// `leader-term`: the term the unit leads at, its fencing token (a number in every format);
/// a unit that does not lead is an error (exit 1), as is an answer that cannot be trusted.
pub fn leader_term(target: ToolArgs, output: OutputArgs) -> ExitCode {
    let format = match Format::parse(&output.format) {
        Ok(format) => format,
        Err(message) => return fail(USAGE, message),
    };
    match ask(&target, ToolRequest::IsLeader, "leadership status unknown: ") {
        // Judged as late as possible: right before it is printed.
        Ok(answer) => match answer.leader_term(BootClock.now()) {
            Ok(Some(term)) => print(&output, format, &Value::Number(term)),
            Ok(None) => fail(1, format!("{} is not the leader", target.unit)),
            Err(message) => fail(1, format!("leadership status unknown: {message}")),
        },
        Err((code, message)) => fail(code, message),
    }
}

/// `leader-get [KEY|-]`: one value (nothing when absent in smart and yaml, `null` in json),
/// or every setting.
pub fn leader_get(target: ToolArgs, output: OutputArgs, args: Vec<String>) -> ExitCode {
    read(&target, &output, &args, 1, |key, _| ToolRequest::LeaderGet { key }, "cannot read leadership settings: ")
}

/// `leader-set K=V...`: one atomic group (parsed as Juju's `keyvalues`); an empty value
/// deletes its key; no pairs at all is a write that changes nothing.
pub fn leader_set(target: ToolArgs, pairs: Vec<String>) -> ExitCode {
    write(&target, &pairs, |settings| ToolRequest::LeaderSet { settings }, "cannot write leadership settings: ")
}

/// `unit-set K=V...`: one atomic group of the unit's own data (parsed as `leader-set`'s);
/// an empty value deletes its key. Refused (exit 1) for a copy of the unit that may no
/// longer write its data.
pub fn unit_set(target: ToolArgs, pairs: Vec<String>) -> ExitCode {
    write(&target, &pairs, |settings| ToolRequest::UnitSet { settings }, "cannot write unit data: ")
}

/// `unit-get [KEY|-] [UNIT]` (the order of Juju's `relation-get`): one value of UNIT's
/// data (the asking unit's own without UNIT), or all of it; another unit's only through
/// the leader's agent.
pub fn unit_get(target: ToolArgs, output: OutputArgs, args: Vec<String>) -> ExitCode {
    if let Some(unit) = args.get(1)
        && let Err(err) = unit.parse::<UnitName>()
    {
        return fail(USAGE, format!("invalid unit {unit:?}: {err}"));
    }
    let request = |key, unit: Option<&String>| ToolRequest::UnitGet { unit: unit.cloned(), key };
    read(&target, &output, &args, 2, request, "cannot read unit data: ")
}

/// A read tool: its KEY argument (`-` or none: every key), then up to `most - 1` more
/// arguments `request` takes the first of; the answer printed in the output's format.
fn read(
    target: &ToolArgs,
    output: &OutputArgs,
    args: &[String],
    most: usize,
    request: impl FnOnce(Option<String>, Option<&String>) -> ToolRequest,
    what: &str,
) -> ExitCode {
    let format = match Format::parse(&output.format) {
        Ok(format) => format,
        Err(message) => return fail(USAGE, message),
    };
    let key = match args.first() {
        Some(key) if key.contains('=') => return fail(USAGE, format!("invalid key {key:?}")),
        Some(key) if key != "-" => Some(key.clone()),
        _ => None,
    };
    if args.len() > most {
        return fail(USAGE, format!("unrecognized args: {}", quoted_list(&args[most..])));
    }
    match ask(target, request(key, args.get(1)), what) {
        Ok(ToolResponse::Value(value)) => print(output, format, &Value::Text(value)),
        Ok(ToolResponse::Settings(settings)) => print(output, format, &Value::Map(settings)),
        Ok(other) => fail(1, format!("unexpected answer {other:?}")),
        Err((code, message)) => fail(code, message),
    }
}

/// A write tool: KEY=VALUE pairs parsed as Juju's `keyvalues`, sent as one group.
fn write(
    target: &ToolArgs,
    pairs: &[String],
    request: impl FnOnce(Vec<(String, String)>) -> ToolRequest,
    what: &str,
) -> ExitCode {
    let settings = match super::args::parse_leader_set_args(pairs) {
        Ok(settings) => settings,
        Err(err) => return fail(USAGE, err),
    };
    match ask(target, request(settings), what) {
        Ok(ToolResponse::Done) => ExitCode::SUCCESS,
        Ok(other) => fail(1, format!("unexpected answer {other:?}")),
        Err((code, message)) => fail(code, message),
    }
}

/// A string as a YAML scalar: plain when that reads back as the same string, else quoted
/// (a JSON string is a valid YAML double-quoted scalar).
fn yaml_scalar(text: &str) -> String {
    let plain_safe = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c))
        && !text.starts_with(['-', '.'])
        && text.parse::<f64>().is_err()
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n" | "~"
        );
    if plain_safe { text.to_owned() } else { serde_json::json!(text).to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_scalars_quote_what_would_not_read_back() {
        assert_eq!(yaml_scalar("cluster-1a2b"), "cluster-1a2b");
        for quoted in ["", "true", "No", "123", "1e5", "a b", "a: b", "-x", "null", "é"] {
            assert!(yaml_scalar(quoted).starts_with('"'), "{quoted:?}");
        }
    }

    #[test]
    fn formats_print_as_juju_s_formatters() {
        let map = Value::Map(vec![("key".into(), "value".into()), ("sample".into(), "settings".into())]);
        assert_eq!(Format::Smart.render(&map), "key: value\nsample: settings\n");
        assert_eq!(Format::Yaml.render(&map), "key: value\nsample: settings\n");
        assert_eq!(Format::Json.render(&map), "{\"key\":\"value\",\"sample\":\"settings\"}\n");
        assert_eq!(Format::Smart.render(&Value::Map(vec![])), "{}\n");
        assert_eq!(Format::Json.render(&Value::Map(vec![])), "{}\n");
        assert_eq!(Format::Smart.render(&Value::Text(None)), "");
        assert_eq!(Format::Yaml.render(&Value::Text(None)), "");
        assert_eq!(Format::Json.render(&Value::Text(None)), "null\n");
        assert_eq!(Format::Smart.render(&Value::Text(Some("value".into()))), "value\n");
        assert_eq!(Format::Smart.render(&Value::Text(Some(String::new()))), "", "an empty string prints nothing");
        assert_eq!(Format::Json.render(&Value::Text(Some("value".into()))), "\"value\"\n");
        assert_eq!(Format::Smart.render(&Value::Bool(true)), "True\n");
        assert_eq!(Format::Yaml.render(&Value::Bool(false)), "false\n");
        for format in [Format::Smart, Format::Json, Format::Yaml] {
            assert_eq!(format.render(&Value::Number(7)), "7\n", "a term is a bare number in every format");
        }
        assert_eq!(quoted_list(&["b".into(), "c".into()]), "[\"b\" \"c\"]");
        assert_eq!(
            Format::parse("bad"),
            Err("invalid value \"bad\" for option --format: unknown format \"bad\"".into())
        );
    }
}
