//! What the test units share and what each remembers, and how a host call is answered.
//!
//! Owns the application's leadership (who leads, at which term), its leader settings and
//! their version, its members and their unit data (with the changes the leader has not
//! heard of), and each unit's services; and per unit its store reachability, seeded
//! random stream, data directory, scripted changes and the record of the hook running.
//!
//! Invariants, the host's own where it has one:
//! - at most one unit leads; every change of leader starts a new, higher term, and a unit
//!   that stops leading has its leader-only services stopped at that moment;
//! - `is-leader` is true only on the leader; a minion that cannot reach the store gets
//!   `unknown` (the host's tracker answers the same way: true while the guarantee holds,
//!   an error only when it cannot tell);
//! - reads come from one snapshot per hook, taken at the first read, plus the hook's own
//!   successful writes;
//! - `leader-set` refuses a minion first, then an unreachable store, then an invalid
//!   group (validated by `charm_rules::settings`, against the bucket); a write that
//!   changes nothing leaves the version alone, like the host's stores;
//! - unit data follows the host's rules: a member writes only its own (a removed unit's
//!   writes are `stale`), validated like settings; a unit reads its own, only the leader
//!   reads others' and the members; a change by any unit is pending until a
//!   `unit-data-changed` announces it (a leader's own changes are never announced to it),
//!   and a `leader-elected` forgets what was pending;
//! - a scripted change applies just before the call it was scripted for, so leadership
//!   can move between two calls of one hook.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use charm_rules::names::UnitName;
use charm_rules::settings::{Settings, SettingsWrite};

use super::{Call, CallKind, Change, Hook, HookRun, HostCall, Reply};
use crate::bindings::juju::charm::leadership::LeadershipError;
use crate::bindings::juju::charm::services::{ServiceError, ServiceStatus};
use crate::{Error, LogLevel, Result, WorkloadStatus};

/// A configured service of one unit.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub(crate) leader_only: bool,
    pub(crate) pid: Option<u32>,
}

/// The application as every one of its test units sees it.
#[derive(Debug, Default)]
pub(crate) struct World {
    /// The index of the unit that leads, if any.
    pub(crate) leader: Option<usize>,
    /// The term of the current or last tenure; 0 before the first.
    pub(crate) term: u64,
    pub(crate) settings: Settings,
    /// Increases by one with every write that changed the settings.
    pub(crate) version: u64,
    /// Each unit's configured services, by unit index.
    pub(crate) services: Vec<BTreeMap<String, Service>>,
    /// The members and their data, by unit name.
    pub(crate) members: BTreeMap<String, Settings>,
    /// Units whose data or membership changed and no `unit-data-changed` announced yet.
    pub(crate) pending: BTreeSet<String>,
    next_pid: u32,
}

impl World {
    /// Makes `leader` the leader (a new term), or nobody. The unit that stops leading has
    /// its leader-only services stopped now, as the host does before the guarantee lapses.
    pub(crate) fn set_leader(&mut self, leader: Option<usize>) {
        if self.leader == leader {
            return;
        }
        if let Some(old) = self.leader
            && let Some(services) = self.services.get_mut(old)
        {
            for service in services.values_mut().filter(|s| s.leader_only) {
                service.pid = None;
            }
        }
        if leader.is_some() {
            self.term = self.term.saturating_add(1);
        }
        self.leader = leader;
    }

    /// Validates and applies `group` as the host's stores do; `Ok(true)` if it changed the
    /// settings (and so bumped the version).
    pub(crate) fn write(&mut self, group: &[(String, String)]) -> std::result::Result<bool, String> {
        let write = SettingsWrite::validate(group, &self.settings).map_err(|e| e.to_string())?;
        if write.is_noop_on(&self.settings) {
            return Ok(false);
        }
        write.apply_to(&mut self.settings);
        self.version = self.version.saturating_add(1);
        Ok(true)
    }

    /// `unit` is a member (a change, if it was not one).
    pub(crate) fn join(&mut self, unit: &str) {
        if !self.members.contains_key(unit) {
            self.members.insert(unit.to_owned(), Settings::new());
            self.pending.insert(unit.to_owned());
        }
    }

    /// `unit` leaves, with its data; true if it was a member.
    pub(crate) fn remove(&mut self, unit: &str) -> bool {
        let was = self.members.remove(unit).is_some();
        if was {
            self.pending.insert(unit.to_owned());
        }
        was
    }

    /// Validates and applies `group` to member `unit`'s data as the host's stores do;
    /// `Ok(true)` if it changed it.
    pub(crate) fn write_unit_data(
        &mut self,
        unit: &str,
        group: &[(String, String)],
    ) -> std::result::Result<bool, String> {
        let Some(data) = self.members.get_mut(unit) else { return Err(format!("{unit} is not a member")) };
        let write = SettingsWrite::validate(group, data).map_err(|e| e.to_string())?;
        if write.is_noop_on(data) {
            return Ok(false);
        }
        write.apply_to(data);
        self.pending.insert(unit.to_owned());
        Ok(true)
    }

    pub(crate) fn add_unit(&mut self) -> usize {
        self.services.push(BTreeMap::new());
        self.services.len() - 1
    }

    fn next_pid(&mut self) -> u32 {
        self.next_pid = self.next_pid.wrapping_add(1).max(1000);
        self.next_pid
    }
}

/// What one hook has seen and done so far.
#[derive(Debug)]
struct HookInProgress {
    hook: Hook,
    snapshot: Option<Settings>,
    /// Every member's data, taken at the leader's first read of another unit's.
    units: Option<BTreeMap<String, Settings>>,
    /// The unit's own data (`None` inside: not a member), taken at its first read.
    own: Option<Option<Settings>>,
    /// What a `unit-data-changed` announces.
    changed: Vec<String>,
    calls: Vec<HostCall>,
    logs: Vec<(LogLevel, String)>,
    statuses: Vec<(WorkloadStatus, String)>,
    writes: Vec<Vec<(String, String)>>,
    unit_writes: Vec<Vec<(String, String)>>,
}

/// One test unit.
#[derive(Debug)]
pub(crate) struct UnitState {
    pub(crate) name: UnitName,
    pub(crate) index: usize,
    pub(crate) world: Rc<RefCell<World>>,
    /// Why the store cannot be reached, while it cannot.
    pub(crate) unreachable: Option<String>,
    rng: u64,
    pub(crate) data_dir: tempfile::TempDir,
    scripted: Vec<(CallKind, Change)>,
    /// Every status set, across hooks.
    pub(crate) statuses: Vec<(WorkloadStatus, String)>,
    hook: Option<HookInProgress>,
}

impl UnitState {
    pub(crate) fn new(name: UnitName, world: Rc<RefCell<World>>, seed: u64) -> Self {
        let index = world.borrow_mut().add_unit();
        world.borrow_mut().join(&name.to_string());
        let data_dir = match tempfile::Builder::new().prefix("charm-sdk-unit-").tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("charm_sdk::testing: cannot create a data directory for {name}: {e}"),
        };
        Self {
            name,
            index,
            world,
            unreachable: None,
            rng: seed,
            data_dir,
            scripted: Vec::new(),
            statuses: Vec::new(),
            hook: None,
        }
    }

    pub(crate) fn reseed(&mut self, seed: u64) {
        self.rng = seed;
    }

    pub(crate) fn script(&mut self, before: CallKind, change: Change) {
        self.scripted.push((before, change));
    }

    /// Applies `change` to this unit and its world now.
    pub(crate) fn apply(&mut self, change: Change) {
        match change {
            Change::LoseLeadership => {
                let mut world = self.world.borrow_mut();
                if world.leader == Some(self.index) {
                    world.set_leader(None);
                }
            }
            Change::GainLeadership => self.world.borrow_mut().set_leader(Some(self.index)),
            Change::StoreUnreachable(reason) => self.unreachable = Some(reason),
            Change::StoreReachable => self.unreachable = None,
        }
    }

    pub(crate) fn is_leading(&self) -> bool {
        self.world.borrow().leader == Some(self.index)
    }

    /// Starts `hook`; returns the units it announces (a `unit-data-changed`: the pending
    /// changes of other units, now its own).
    pub(crate) fn begin(&mut self, hook: Hook) -> Vec<String> {
        let me = self.name.to_string();
        let changed = {
            let mut world = self.world.borrow_mut();
            match hook {
                Hook::UnitDataChanged => std::mem::take(&mut world.pending).into_iter().filter(|u| *u != me).collect(),
                Hook::LeaderElected => {
                    world.pending.clear();
                    Vec::new()
                }
                _ => Vec::new(),
            }
        };
        self.hook = Some(HookInProgress {
            hook,
            snapshot: None,
            units: None,
            own: None,
            changed: changed.clone(),
            calls: Vec::new(),
            logs: Vec::new(),
            statuses: Vec::new(),
            writes: Vec::new(),
            unit_writes: Vec::new(),
        });
        changed
    }

    pub(crate) fn finish(&mut self, hook: Hook, result: Result<()>) -> HookRun {
        let done = self.hook.take();
        let Some(done) = done else {
            return HookRun {
                hook,
                result,
                calls: Vec::new(),
                logs: Vec::new(),
                statuses: Vec::new(),
                writes: Vec::new(),
                unit_writes: Vec::new(),
                changed: Vec::new(),
            };
        };
        if result.is_err() {
            // A failed hook announced nothing: its units are owed again.
            self.world.borrow_mut().pending.extend(done.changed.iter().cloned());
        }
        HookRun {
            hook,
            result,
            calls: done.calls,
            logs: done.logs,
            statuses: done.statuses,
            writes: done.writes,
            unit_writes: done.unit_writes,
            changed: done.changed,
        }
    }

    fn hook(&mut self, call: &Call) -> &mut HookInProgress {
        match &mut self.hook {
            Some(hook) => hook,
            // Unreachable through the SDK: the backend answers only while a hook runs.
            None => panic!("charm_sdk::testing: {} called with no hook running", call.kind().name()),
        }
    }

    /// Applies the changes scripted for `call`, records the call with its answer, and
    /// returns the answer.
    fn answer(&mut self, call: Call, decide: impl FnOnce(&mut Self, &Call) -> Result<Reply>) -> Result<Reply> {
        let kind = call.kind();
        while let Some(at) = self.scripted.iter().position(|(before, _)| *before == kind) {
            let (_, change) = self.scripted.remove(at);
            self.apply(change);
        }
        let answer = decide(self, &call);
        self.hook(&call).calls.push(HostCall { call, answer: answer.clone() });
        answer
    }

    pub(crate) fn unit_name(&mut self) -> String {
        let name = self.name.to_string();
        text(self.answer(Call::UnitName, |_, _| Ok(Reply::Text(name))))
    }

    pub(crate) fn application_name(&mut self) -> String {
        let app = self.name.app().to_string();
        text(self.answer(Call::ApplicationName, |_, _| Ok(Reply::Text(app))))
    }

    pub(crate) fn hook_name(&mut self) -> String {
        let call = Call::HookName;
        let hook = self.hook(&call).hook.name().to_owned();
        text(self.answer(call, |_, _| Ok(Reply::Text(hook))))
    }

    pub(crate) fn log(&mut self, level: LogLevel, message: &str) {
        let call = Call::Log { level, message: message.to_owned() };
        self.hook(&call).logs.push((level, message.to_owned()));
        let _ = self.answer(call, |_, _| Ok(Reply::Done));
    }

    pub(crate) fn status_set(&mut self, status: WorkloadStatus, message: &str) {
        let call = Call::StatusSet { status, message: message.to_owned() };
        self.hook(&call).statuses.push((status, message.to_owned()));
        self.statuses.push((status, message.to_owned()));
        let _ = self.answer(call, |_, _| Ok(Reply::Done));
    }

    pub(crate) fn is_leader(&mut self) -> Result<bool> {
        let reply = self.answer(Call::IsLeader, |unit, _| match (unit.is_leading(), &unit.unreachable) {
            (true, _) => Ok(Reply::Bool(true)),
            (false, Some(reason)) => Err(LeadershipError::Unknown(reason.clone()).into()),
            (false, None) => Ok(Reply::Bool(false)),
        })?;
        Ok(matches!(reply, Reply::Bool(true)))
    }

    pub(crate) fn leader_term(&mut self) -> Result<Option<u64>> {
        let reply = self.answer(Call::LeaderTerm, |unit, _| match (unit.is_leading(), &unit.unreachable) {
            (true, _) => Ok(Reply::Term(Some(unit.world.borrow().term))),
            (false, Some(reason)) => Err(LeadershipError::Unknown(reason.clone()).into()),
            (false, None) => Ok(Reply::Term(None)),
        })?;
        Ok(match reply {
            Reply::Term(term) => term,
            _ => None,
        })
    }

    /// The hook's snapshot, taken now if this is its first read.
    fn snapshot(&mut self, call: &Call) -> Result<&Settings> {
        if self.hook(call).snapshot.is_none() {
            if let Some(reason) = &self.unreachable {
                return Err(LeadershipError::Unknown(reason.clone()).into());
            }
            let current = self.world.borrow().settings.clone();
            self.hook(call).snapshot = Some(current);
        }
        Ok(self.hook(call).snapshot.get_or_insert_default())
    }

    pub(crate) fn leader_get(&mut self, key: &str) -> Result<Option<String>> {
        let reply = self.answer(Call::LeaderGet { key: key.to_owned() }, |unit, call| {
            Ok(Reply::Value(unit.snapshot(call)?.get(key).cloned()))
        })?;
        Ok(match reply {
            Reply::Value(value) => value,
            _ => None,
        })
    }

    pub(crate) fn leader_get_all(&mut self) -> Result<Vec<(String, String)>> {
        let reply = self.answer(Call::LeaderGetAll, |unit, call| {
            let all = unit.snapshot(call)?.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            Ok(Reply::Settings(all))
        })?;
        Ok(match reply {
            Reply::Settings(all) => all,
            _ => Vec::new(),
        })
    }

    pub(crate) fn leader_set(&mut self, group: &[(String, String)]) -> Result<()> {
        self.answer(Call::LeaderSet { settings: group.to_vec() }, |unit, call| {
            if !unit.is_leading() {
                return Err(LeadershipError::NotLeader.into());
            }
            if group.is_empty() {
                return Ok(Reply::Done);
            }
            if let Some(reason) = &unit.unreachable {
                return Err(LeadershipError::Unknown(reason.clone()).into());
            }
            unit.world.borrow_mut().write(group).map_err(|reason| Error::from(LeadershipError::Invalid(reason)))?;
            let hook = unit.hook(call);
            hook.writes.push(group.to_vec());
            if let Some(snapshot) = &mut hook.snapshot
                && let Ok(write) = SettingsWrite::validate(group, &Settings::new())
            {
                write.apply_to(snapshot);
            }
            Ok(Reply::Done)
        })
        .map(|_| ())
    }

    pub(crate) fn unit_set(&mut self, group: &[(String, String)]) -> Result<()> {
        self.answer(Call::UnitSet { settings: group.to_vec() }, |unit, call| {
            if let Some(reason) = &unit.unreachable {
                return Err(LeadershipError::Unknown(reason.clone()).into());
            }
            let me = unit.name.to_string();
            let written = {
                let mut world = unit.world.borrow_mut();
                if !world.members.contains_key(&me) {
                    let reason = format!("{me} is not a member of {} (removed)", unit.name.app());
                    return Err(LeadershipError::Stale(reason).into());
                }
                world.write_unit_data(&me, group).map_err(|reason| Error::from(LeadershipError::Invalid(reason)))?;
                world.members.get(&me).cloned()
            };
            let hook = unit.hook(call);
            hook.unit_writes.push(group.to_vec());
            hook.own = Some(written);
            Ok(Reply::Done)
        })
        .map(|_| ())
    }

    /// `of`'s data from the hook's snapshot: this unit's own for anyone, another's (and
    /// the members) for the leader only.
    fn unit_data_of(&mut self, of: &str, call: &Call) -> Result<Option<Settings>> {
        let unit = UnitName::new(of).map_err(|e| Error::from(LeadershipError::Invalid(e.to_string())))?;
        if unit.app() != self.name.app() {
            return Err(LeadershipError::Invalid(format!("{unit} is not a unit of {}", self.name.app())).into());
        }
        if unit != self.name {
            return Ok(self.all_units(call)?.get(of).cloned());
        }
        if self.hook(call).own.is_none() {
            if let Some(reason) = &self.unreachable {
                return Err(LeadershipError::Unknown(reason.clone()).into());
            }
            let own = self.world.borrow().members.get(of).cloned();
            self.hook(call).own = Some(own);
        }
        Ok(self.hook(call).own.clone().flatten())
    }

    fn all_units(&mut self, call: &Call) -> Result<&BTreeMap<String, Settings>> {
        if !self.is_leading() {
            return Err(LeadershipError::NotLeader.into());
        }
        if self.hook(call).units.is_none() {
            if let Some(reason) = &self.unreachable {
                return Err(LeadershipError::Unknown(reason.clone()).into());
            }
            let members = self.world.borrow().members.clone();
            self.hook(call).units = Some(members);
        }
        Ok(self.hook(call).units.get_or_insert_default())
    }

    pub(crate) fn unit_get(&mut self, of: &str, key: &str) -> Result<Option<String>> {
        let call = Call::UnitGet { unit: of.to_owned(), key: key.to_owned() };
        let reply = self.answer(call, |unit, call| {
            Ok(Reply::Value(unit.unit_data_of(of, call)?.and_then(|data| data.get(key).cloned())))
        })?;
        Ok(match reply {
            Reply::Value(value) => value,
            _ => None,
        })
    }

    pub(crate) fn unit_get_all(&mut self, of: &str) -> Result<Vec<(String, String)>> {
        let reply = self.answer(Call::UnitGetAll { unit: of.to_owned() }, |unit, call| {
            let data = unit.unit_data_of(of, call)?.unwrap_or_default();
            Ok(Reply::Settings(data.into_iter().collect()))
        })?;
        Ok(match reply {
            Reply::Settings(all) => all,
            _ => Vec::new(),
        })
    }

    pub(crate) fn units(&mut self) -> Result<Vec<String>> {
        let reply =
            self.answer(Call::Units, |unit, call| Ok(Reply::Units(unit.all_units(call)?.keys().cloned().collect())))?;
        Ok(match reply {
            Reply::Units(units) => units,
            _ => Vec::new(),
        })
    }

    fn with_service<T>(&mut self, name: &str, f: impl FnOnce(&mut Service, bool, &mut World) -> T) -> Result<T> {
        let leading = self.is_leading();
        let index = self.index;
        let mut world = self.world.borrow_mut();
        let mut service = match world.services.get(index).and_then(|s| s.get(name)) {
            Some(service) => service.clone(),
            None => return Err(ServiceError::UnknownService(name.to_owned()).into()),
        };
        let answer = f(&mut service, leading, &mut world);
        if let Some(slot) = world.services.get_mut(index).and_then(|s| s.get_mut(name)) {
            *slot = service;
        }
        Ok(answer)
    }

    pub(crate) fn service_start(&mut self, name: &str) -> Result<()> {
        self.answer(Call::ServiceStart { name: name.to_owned() }, |unit, _| {
            unit.with_service(name, |service, leading, world| {
                if service.leader_only && !leading {
                    return Err(ServiceError::NotLeader.into());
                }
                if service.pid.is_none() {
                    service.pid = Some(world.next_pid());
                }
                Ok(Reply::Done)
            })?
        })
        .map(|_| ())
    }

    pub(crate) fn service_stop(&mut self, name: &str) -> Result<()> {
        self.answer(Call::ServiceStop { name: name.to_owned() }, |unit, _| {
            unit.with_service(name, |service, _, _| {
                service.pid = None;
                Reply::Done
            })
        })
        .map(|_| ())
    }

    pub(crate) fn service_status(&mut self, name: &str) -> Result<ServiceStatus> {
        let reply = self.answer(Call::ServiceStatus { name: name.to_owned() }, |unit, _| {
            unit.with_service(name, |service, _, _| Reply::Service(status_of(name, service)))
        })?;
        match reply {
            Reply::Service(status) => Ok(status),
            other => Err(Error::Failed(format!("charm_sdk::testing: unexpected answer {other:?}"))),
        }
    }

    pub(crate) fn service(&self, name: &str) -> Option<ServiceStatus> {
        let world = self.world.borrow();
        world.services.get(self.index)?.get(name).map(|service| status_of(name, service))
    }

    /// The next bytes of this unit's seeded stream (splitmix64: repeatable, not secret).
    pub(crate) fn random_fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

fn status_of(name: &str, service: &Service) -> ServiceStatus {
    ServiceStatus {
        name: name.to_owned(),
        running: service.pid.is_some(),
        pid: service.pid,
        leader_only: service.leader_only,
    }
}

fn text(reply: Result<Reply>) -> String {
    match reply {
        Ok(Reply::Text(text)) => text,
        _ => String::new(),
    }
}

/// A seed derived from a unit's name, so that a unit built without one is still repeatable.
pub(crate) fn seed_for(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
