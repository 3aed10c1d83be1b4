//! `charm-host is-leader | leader-get | leader-set`: hook tools for scripts and cron jobs,
//! answered by the unit's running agent without waiting behind its hooks. Output formats
//! and exit codes follow Juju's tools: 0 on success, 1 when the answer is unknown or the
//! unit is not the leader, 2 on usage errors.

use std::process::ExitCode;
use std::time::Duration;

use charm_host::hook_tools::{self, ToolCallError, ToolErrorKind, ToolRequest, ToolResponse};
use charm_host::names::UnitName;
use charm_host::state_dir::StateDir;

use super::{Format, ToolArgs};

use super::USAGE_EXIT as USAGE;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
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
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let socket = state.socket(unit);
    match runtime.block_on(hook_tools::call(&socket, request, timeout)) {
        Ok(answer) => Ok(answer),
        Err(ToolCallError::Timeout(_)) => anyhow::bail!("{unit}'s agent did not answer within {timeout:?} (is it frozen?)"),
        Err(err) => Err(err.into()),
    }
}

/// Sends `request` to the target unit's agent; an error is reported and becomes the exit code.
pub(super) fn ask(target: &ToolArgs, request: ToolRequest) -> Result<ToolResponse, ExitCode> {
    match call_agent(&StateDir::new(&target.state), &target.unit, &request, target.timeout) {
        Ok(ToolResponse::Error { kind, message }) => Err(fail(if kind == ToolErrorKind::Invalid { USAGE } else { 1 }, message)),
        Ok(response) => Ok(response),
        Err(err) => Err(fail(1, err)),
    }
}

/// `is-leader`: `True`/`False` (smart) or `true`/`false` (json, yaml).
pub fn is_leader(target: ToolArgs) -> ExitCode {
    match ask(&target, ToolRequest::IsLeader) {
        Ok(ToolResponse::Leader(leader)) => {
            match target.format {
                Format::Smart => outln!("{}", if leader { "True" } else { "False" }),
                Format::Json | Format::Yaml => outln!("{leader}"),
            }
            ExitCode::SUCCESS
        }
        Ok(other) => fail(1, format!("unexpected answer {other:?}")),
        Err(code) => code,
    }
}

/// `leader-get [KEY|-]`: one raw value (nothing when absent; `null` in json/yaml), or all.
pub fn leader_get(target: ToolArgs, key: Option<String>) -> ExitCode {
    let key = key.filter(|k| k != "-");
    match ask(&target, ToolRequest::LeaderGet { key }) {
        Ok(ToolResponse::Value(value)) => {
            match (target.format, value) {
                (Format::Smart, Some(value)) => outln!("{value}"),
                (Format::Smart, None) => {}
                (Format::Json, value) => outln!("{}", serde_json::json!(value)),
                (Format::Yaml, Some(value)) => outln!("{}", yaml_scalar(&value)),
                (Format::Yaml, None) => outln!("null"),
            }
            ExitCode::SUCCESS
        }
        Ok(ToolResponse::Settings(settings)) => {
            match target.format {
                Format::Json => {
                    let map: serde_json::Map<String, serde_json::Value> =
                        settings.into_iter().map(|(k, v)| (k, v.into())).collect();
                    outln!("{}", serde_json::Value::Object(map));
                }
                Format::Smart | Format::Yaml if settings.is_empty() => {
                    if target.format == Format::Yaml {
                        outln!("{{}}");
                    }
                }
                Format::Smart | Format::Yaml => {
                    for (key, value) in settings {
                        outln!("{}: {}", yaml_scalar(&key), yaml_scalar(&value));
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Ok(other) => fail(1, format!("unexpected answer {other:?}")),
        Err(code) => code,
    }
}

/// `leader-set K=V...`: one atomic group; an empty value deletes its key.
pub fn leader_set(target: ToolArgs, pairs: Vec<String>) -> ExitCode {
    let settings = match hook_tools::parse_leader_set_args(&pairs) {
        Ok(settings) => settings,
        Err(err) => return fail(USAGE, err),
    };
    match ask(&target, ToolRequest::LeaderSet { settings }) {
        Ok(ToolResponse::Done) => ExitCode::SUCCESS,
        Ok(other) => fail(1, format!("unexpected answer {other:?}")),
        Err(code) => code,
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
    use super::yaml_scalar;

    #[test]
    fn yaml_scalars_quote_what_would_not_read_back() {
        assert_eq!(yaml_scalar("cluster-1a2b"), "cluster-1a2b");
        for quoted in ["", "true", "No", "123", "1e5", "a b", "a: b", "-x", "null", "é"] {
            assert!(yaml_scalar(quoted).starts_with('"'), "{quoted:?}");
        }
    }
}
