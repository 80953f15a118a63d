//! Decoding and validation: YAML documents → the checked [`Config`] (spec §1–§2, §4.2).
//!
//! Decoding is strict, like calicoctl's: unknown fields are errors naming the valid ones, wrong types say
//! what was expected. Every problem is reported, each at the position of the offending key or value;
//! a resource with an error is left out of the `Config` (which callers must not use anyway when there
//! are errors), and decoding goes on with the next one.

mod check;
mod felix;
mod fields;
mod hep;
mod management;
mod meta;
mod net;
mod netset;
mod policy;
mod sel;
mod tier;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::diag::Diagnostic;
use crate::config::model::{At, Config, Labels, Pos};
use crate::config::yaml::{Node, Value};

use fields::{object, string, Cx, Obj};
use meta::{metadata, Meta, NameRule};

const CALICO: &str = "projectcalico.org/v3";
const OURS: &str = "hostpolicy/v1";

/// The kinds hostpolicyd reads, with their apiVersion.
const KINDS: &[(&str, &str)] = &[
    ("GlobalNetworkPolicy", CALICO),
    ("Tier", CALICO),
    ("StagedGlobalNetworkPolicy", CALICO),
    ("HostEndpoint", CALICO),
    ("GlobalNetworkSet", CALICO),
    ("FelixConfiguration", CALICO),
    ("ConnectivityCheck", OURS),
    ("ManagementAccess", OURS),
];

/// Calico kinds that mean nothing without Kubernetes or a Calico datastore.
const OTHER_CALICO_KINDS: &[&str] = &[
    "NetworkSet",
    "IPPool",
    "IPReservation",
    "BGPPeer",
    "BGPConfiguration",
    "BGPFilter",
    "ClusterInformation",
    "KubeControllersConfiguration",
    "CalicoNodeStatus",
    "IPAMConfiguration",
    "BlockAffinity",
    "Node",
    "WorkloadEndpoint",
    "StagedNetworkPolicy",
    "StagedKubernetesNetworkPolicy",
];

/// Accumulates resources and diagnostics over all files of one load, or over one part of it
/// ([`Validator::into_part`]; the parts of a load, validated apart and in parallel, are put together by
/// [`merge`]).
#[derive(Default)]
pub struct Validator {
    config: Config,
    diagnostics: Vec<Diagnostic>,
    names: Registry,
}

/// The names defined so far: (kind, name) → where it was first defined, and each definition in order.
#[derive(Default)]
struct Registry {
    names: Names,
    defined: Vec<Defined>,
}

/// A resource's name, registered by the first resource of its kind to have it.
#[derive(Debug, Clone)]
struct Defined {
    kind: &'static str,
    name: String,
    pos: Pos,
    /// Whether the resource is in the part's [`Config`] (no error): the kept resources of a kind are its
    /// `Config` list, in the same order.
    kept: bool,
}

/// The validated resources of some documents of one load, with their diagnostics, before the checks
/// across them (duplicate names, tiers): what [`merge`] puts together.
#[derive(Debug, Clone, Default)]
pub struct Part {
    config: Config,
    diagnostics: Vec<Diagnostic>,
    defined: Vec<Defined>,
}

impl Part {
    /// The part's resources, to share those that did not change with an earlier load's
    /// (`config::cache::Parsed::share_unchanged`).
    pub(crate) fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add diagnostics found before validation (YAML syntax, duplicate keys, tags).
    pub fn extend_diagnostics(&mut self, diagnostics: impl IntoIterator<Item = Diagnostic>) {
        self.diagnostics.extend(diagnostics);
    }

    /// Decode one YAML document of `file` (whose text is `src`): a resource or a list of resources.
    pub fn document(&mut self, file: &Arc<str>, src: &str, doc: &Node) {
        let mut cx = Cx {
            file: file.clone(),
            src,
            diags: &mut self.diagnostics,
            errors: 0,
        };
        let mut resources = Vec::new();
        match &doc.value {
            Value::Map(_) => resources.push(doc),
            Value::Seq(items) => resources.extend(items.iter()),
            Value::Null | Value::Invalid => {}
            _ => cx.error(
                doc,
                format!("expected a resource (a mapping with apiVersion, kind, metadata and spec) or a list of resources, not {}", doc.kind()),
            ),
        }
        for node in resources {
            resource(&mut cx, &mut self.config, &mut self.names, node);
        }
    }

    /// The configuration (only resources without errors) and every diagnostic, in file order.
    pub fn finish(self) -> (Config, Vec<Diagnostic>) {
        let tiers = self
            .names
            .names
            .keys()
            .filter(|(kind, _)| *kind == "Tier")
            .map(|(_, name)| name.as_str());
        finish(self.config, self.diagnostics, tiers.collect())
    }

    /// What was validated, for [`merge`] with the other parts of the load.
    pub fn into_part(self) -> Part {
        Part {
            config: self.config,
            diagnostics: self.diagnostics,
            defined: self.names.defined,
        }
    }
}

/// The checks across all resources of the load, then the diagnostics in file order. `declared`: the
/// names of every Tier defined (a Tier with errors is still declared: its policies are not refused a
/// second time for it).
fn finish(
    mut config: Config,
    mut diagnostics: Vec<Diagnostic>,
    declared: Vec<&str>,
) -> (Config, Vec<Diagnostic>) {
    tier::check_policy_tiers(&mut config, &declared, &mut diagnostics);
    crate::config::diag::sort(&mut diagnostics);
    (config, diagnostics)
}

/// The parts of one load, in file order, as one [`Validator`] fed every document in that order would
/// have finished: a name defined in an earlier part makes a later resource of the same kind and name a
/// duplicate (an error, and the resource is left out), then the checks across resources run
/// ([`Validator::finish`]). The parts are only read: cached parts are merged again on the next load.
///
/// The daemon merges every file's cached parts again at each reload (10,000 files: 10,000 parts), so
/// this is kept cheap: the names are borrowed from the parts, not copied.
pub fn merge<'p>(parts: impl IntoIterator<Item = &'p Part>) -> (Config, Vec<Diagnostic>) {
    let mut config = Config::default();
    let mut diagnostics = Vec::new();
    let parts = parts.into_iter();
    let mut names: HashMap<(&'static str, &'p str), &'p Pos> =
        HashMap::with_capacity(parts.size_hint().0);
    for part in parts {
        diagnostics.extend(part.diagnostics.iter().cloned());
        let mut taken = Taken::default();
        for d in &part.defined {
            let duplicate = match names.entry((d.kind, d.name.as_str())) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    diagnostics.push(Diagnostic::error(
                        d.pos.clone(),
                        format!(
                            "{} '{}' is already defined at {}",
                            d.kind,
                            d.name,
                            first.get()
                        ),
                    ));
                    true
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(&d.pos);
                    false
                }
            };
            if d.kept {
                taken.next(d.kind, &part.config, &mut config, !duplicate);
            }
        }
    }
    let tiers = names
        .keys()
        .filter(|(kind, _)| *kind == "Tier")
        .map(|(_, name)| *name);
    finish(config, diagnostics, tiers.collect())
}

/// How many resources of each kind of a part were gone through by [`merge`].
#[derive(Default)]
struct Taken {
    tiers: usize,
    policies: usize,
    staged: usize,
    host_endpoints: usize,
    network_sets: usize,
    felix: usize,
    checks: usize,
    management: usize,
}

impl Taken {
    /// Goes past the next resource of `kind` in `from`, copying it into `to` when `keep`.
    fn next(&mut self, kind: &str, from: &Config, to: &mut Config, keep: bool) {
        fn take<T: Clone>(i: &mut usize, from: &[T], to: &mut Vec<T>, keep: bool) {
            if let (true, Some(r)) = (keep, from.get(*i)) {
                to.push(r.clone());
            }
            *i += 1;
        }
        match kind {
            "Tier" => take(&mut self.tiers, &from.tiers, &mut to.tiers, keep),
            "GlobalNetworkPolicy" => {
                take(&mut self.policies, &from.policies, &mut to.policies, keep)
            }
            "StagedGlobalNetworkPolicy" => {
                take(&mut self.staged, &from.staged, &mut to.staged, keep)
            }
            "HostEndpoint" => take(
                &mut self.host_endpoints,
                &from.host_endpoints,
                &mut to.host_endpoints,
                keep,
            ),
            "GlobalNetworkSet" => take(
                &mut self.network_sets,
                &from.network_sets,
                &mut to.network_sets,
                keep,
            ),
            "FelixConfiguration" => take(&mut self.felix, &from.felix, &mut to.felix, keep),
            "ConnectivityCheck" => take(&mut self.checks, &from.checks, &mut to.checks, keep),
            "ManagementAccess" => take(
                &mut self.management,
                &from.management,
                &mut to.management,
                keep,
            ),
            other => debug_assert!(false, "merge does not know the kind {other}"),
        }
    }
}

/// What a decoded resource becomes.
enum Decoded {
    Tier(crate::config::model::Tier),
    Policy(Box<crate::config::model::GlobalNetworkPolicy>),
    Staged(Box<crate::config::model::GlobalNetworkPolicy>),
    HostEndpoint(crate::config::model::HostEndpoint),
    NetworkSet(crate::config::model::GlobalNetworkSet),
    Felix(crate::config::model::FelixConfiguration),
    Check(crate::config::model::ConnectivityCheck),
    Management(crate::config::model::ManagementAccess),
}

type Names = HashMap<(&'static str, String), Pos>;

fn resource(cx: &mut Cx, config: &mut Config, names: &mut Registry, node: &Node) {
    let errors_before = cx.errors;
    let Some((obj, api_version, kind)) = envelope(cx, node) else {
        return;
    };
    let known = KINDS
        .iter()
        .find(|(k, v)| *k == kind && *v == api_version)
        .map(|(k, _)| *k);
    if let Some(kind) = known {
        let registered = names.defined.len();
        let decoded = decode(cx, names, &obj, kind);
        if let Some(decoded) = decoded.filter(|_| cx.errors == errors_before) {
            // Without errors its name was registered (valid, and not a duplicate).
            if let Some(d) = names.defined.get_mut(registered) {
                d.kept = true;
            }
            match decoded {
                Decoded::Tier(r) => config.tiers.push(r),
                Decoded::Policy(r) => config.policies.push(Arc::from(r)),
                Decoded::Staged(r) => config.staged.push(Arc::from(r)),
                Decoded::HostEndpoint(r) => config.host_endpoints.push(r),
                Decoded::NetworkSet(r) => config.network_sets.push(Arc::new(r)),
                Decoded::Felix(r) => config.felix.push(r),
                Decoded::Check(r) => config.checks.push(r),
                Decoded::Management(r) => config.management.push(r),
            }
        }
        return;
    }
    let at = obj.get("kind").unwrap_or(node);
    match (kind, api_version) {
        _ if is_list_kind(kind) => list_kind(cx, config, names, &obj, kind),
        ("NetworkPolicy", CALICO) => {
            cx.warn(at, "ignored: a namespaced NetworkPolicy never applies to host endpoints (use a GlobalNetworkPolicy)")
        }
        ("Profile", CALICO) => cx.error(
            at,
            "Profile resources are not supported: only the built-in `projectcalico-default-allow` profile exists (list it in a HostEndpoint's `profiles`)",
        ),
        _ => wrong_kind(cx, &obj, api_version, kind),
    }
}

/// Check the top-level fields, decode metadata (registering the name), then the kind's spec.
fn decode(cx: &mut Cx, names: &mut Registry, obj: &Obj, kind: &'static str) -> Option<Decoded> {
    let allowed = ["apiVersion", "kind", "metadata", "spec"];
    for (key, _) in obj.entries() {
        if !allowed.contains(&key.as_str()) {
            let pos = cx.key_pos(key);
            cx.error_at(
                pos,
                fields::unknown_field(&key.text, &format!("a {kind}"), &allowed),
            );
        }
    }
    let rule = match kind {
        "GlobalNetworkPolicy" | "StagedGlobalNetworkPolicy" => NameRule::Policy,
        "Tier" => NameRule::Tier,
        _ => NameRule::Subdomain,
    };
    let meta = metadata(cx, obj.node, obj.get("metadata"), kind, rule);
    // Registered before the spec is decoded, so that a duplicate is reported even when one of the
    // two copies has other errors.
    let pos = cx.pos(obj.node);
    if let Some(meta) = &meta {
        match names.names.get(&(kind, meta.name.value.clone())) {
            Some(first) => {
                let message = format!("{kind} '{}' is already defined at {first}", meta.name.value);
                cx.error_at(pos, message);
            }
            None => {
                names
                    .names
                    .insert((kind, meta.name.value.clone()), pos.clone());
                names.defined.push(Defined {
                    kind,
                    name: meta.name.value.clone(),
                    pos,
                    kept: false,
                });
            }
        }
    }
    // Without a valid name the spec is still decoded: its own errors are worth reporting too.
    let meta = meta.unwrap_or_else(|| Meta {
        name: At {
            value: String::new(),
            pos: cx.pos(obj.node),
        },
        labels: Labels::new(),
    });
    let spec = obj.get("spec");
    let node = obj.node;
    Some(match kind {
        "Tier" => Decoded::Tier(tier::tier(cx, node, meta, spec)?),
        "GlobalNetworkPolicy" => Decoded::Policy(Box::new(policy::policy(cx, node, meta, spec))),
        "StagedGlobalNetworkPolicy" => {
            Decoded::Staged(Box::new(policy::staged_policy(cx, node, meta, spec)))
        }
        "HostEndpoint" => Decoded::HostEndpoint(hep::host_endpoint(cx, node, meta, spec)?),
        "GlobalNetworkSet" => {
            let labels = obj.get("metadata").and_then(|m| match &m.value {
                Value::Map(entries) => entries
                    .iter()
                    .find(|(k, _)| k.text == "labels")
                    .map(|(_, v)| v),
                _ => None,
            });
            Decoded::NetworkSet(netset::network_set(cx, node, meta, labels, spec))
        }
        "FelixConfiguration" => Decoded::Felix(felix::felix_configuration(cx, node, meta, spec)),
        "ManagementAccess" => {
            Decoded::Management(management::management_access(cx, node, meta, spec)?)
        }
        _ => Decoded::Check(check::connectivity_check(cx, node, meta, spec)?),
    })
}

/// `apiVersion` and `kind`. Unknown top-level fields are checked per kind (lists have `items`).
fn envelope<'n>(cx: &mut Cx, node: &'n Node) -> Option<(Obj<'n>, &'n str, &'n str)> {
    let all = ["apiVersion", "kind", "metadata", "spec", "items"];
    // The top-level keys are checked by `decode` / `list_kind`; here every key is let through.
    let obj = match &node.value {
        Value::Map(entries) => {
            let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
            object(cx, node, "a resource", &keys)?
        }
        _ => object(cx, node, "a resource", &all)?,
    };
    let api_version = match obj.get("apiVersion") {
        Some(n) => string(cx, n, "apiVersion")?,
        None => {
            cx.error(node, format!("missing `apiVersion`: write `apiVersion: {CALICO}` (or `{OURS}` for a ConnectivityCheck)"));
            return None;
        }
    };
    let kind = match obj.get("kind") {
        Some(n) => string(cx, n, "kind")?,
        None => {
            cx.error(node, format!("missing `kind`; {}", accepted_kinds()));
            return None;
        }
    };
    Some((obj, api_version, kind))
}

fn accepted_kinds() -> String {
    let list: Vec<String> = KINDS.iter().map(|(k, v)| format!("{k} ({v})")).collect();
    format!("accepted kinds: {}", list.join(", "))
}

/// `kind: List` or `kind: GlobalNetworkPolicyList` (what `calicoctl get -o yaml` prints): `items`.
fn is_list_kind(kind: &str) -> bool {
    kind == "List"
        || kind
            .strip_suffix("List")
            .is_some_and(|k| KINDS.iter().any(|(known, _)| *known == k))
}

fn list_kind(cx: &mut Cx, config: &mut Config, names: &mut Registry, obj: &Obj, kind: &str) {
    let allowed = ["apiVersion", "kind", "metadata", "items"];
    for (key, _) in obj.entries() {
        if !allowed.contains(&key.as_str()) {
            let pos = cx.key_pos(key);
            cx.error_at(
                pos,
                fields::unknown_field(&key.text, &format!("a {kind}"), &allowed),
            );
        }
    }
    let Some(items) = obj.get("items").and_then(|n| fields::list(cx, n, "items")) else {
        return;
    };
    for item in items {
        resource(cx, config, names, item);
    }
}

/// An unknown kind, or a known kind with the wrong apiVersion.
fn wrong_kind(cx: &mut Cx, obj: &Obj, api_version: &str, kind: &str) {
    let kind_node = obj.get("kind").unwrap_or(obj.node);
    let api_node = obj.get("apiVersion").unwrap_or(obj.node);
    if let Some((_, wanted)) = KINDS.iter().find(|(k, _)| *k == kind) {
        let message = if api_version == "crd.projectcalico.org/v1" {
            format!("`crd.projectcalico.org/v1` is Calico's internal storage format, which skips defaulting and validation: write `apiVersion: {wanted}`")
        } else {
            format!("{kind} needs `apiVersion: {wanted}`, not `{api_version}`")
        };
        cx.error(api_node, message);
        return;
    }
    let message = if let Some((k, _)) = KINDS.iter().find(|(k, _)| k.eq_ignore_ascii_case(kind)) {
        format!("unknown kind `{kind}`: kinds are case-sensitive, write `{k}`")
    } else if OTHER_CALICO_KINDS.contains(&kind) {
        format!(
            "Calico's `{kind}` has no meaning for hostpolicyd; {}",
            accepted_kinds()
        )
    } else if api_version != CALICO && api_version != OURS {
        format!(
            "unknown apiVersion `{api_version}` (kind `{kind}`); {}",
            accepted_kinds()
        )
    } else {
        format!("unknown kind `{kind}`; {}", accepted_kinds())
    };
    cx.error(kind_node, message);
}
