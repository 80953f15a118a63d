//! Every name the compiler gives a kernel object (chains, sets, verdict maps), and the texts it writes
//! into the kernel for people (rule comments, log prefixes). Nothing else makes or takes apart these
//! names: code that needs a chain asks here, and code that needs to know where a rule comes from reads
//! its typed [`Origin`] (`Ruleset::origins`), never its comment or its chain's name.
//!
//! nftables limits names to 255 bytes; a name that would be longer is cut and ends with a hash of what
//! was cut ([`object_name`]), so names cannot be parsed back in general anyway.
//!
//! The chains (DESIGN.md "nftables layout"):
//! - base chains: [`RAW_PREROUTING`], [`RAW_OUTPUT`] (-300), [`MANGLE_PREROUTING`] (-150),
//!   [`FILTER_INPUT`], [`FILTER_FORWARD`], [`FILTER_OUTPUT`] (0), [`MANGLE_POSTROUTING`] (-150);
//! - dispatch chains (`raw-from-hep`, ...), each with its verdict map ([`verdict_map`]);
//! - per host endpoint, stage and direction: [`endpoint_chain`] (`fh-NAME`, `th-NAME`, `pre-fh-NAME`, ...);
//! - per policy and direction: [`policy_chain`] (`pi-NAME`, `po-NAME`), shared by every stage and host
//!   endpoint that uses the policy; helper chains of rules with named `notPorts` ([`exclusion_chain`]);
//! - the failsafe chains ([`failsafe_chain`]).
//!
//! Sets: `lit-<hash of the contents>-<kind>` for lists written in the configuration ([`literal_set`]),
//! `sel-<hash of the selector>-<kind>` for rule selectors ([`selector_set`]); in the kernel, a set may
//! be a version `NAME.N` of one of them ([`set_version`]). The nftables layer's own: the
//! [`HASH_CHAIN`] and the [`TABLE_COMMENT`].

use sha2::{Digest, Sha256};

use super::hash::debug_digest;
use crate::config::model::DEFAULT_TIER;
use crate::ruleset::{Dir, Family, Kind, Origin, SetElement, SetType, SourcePos, Stage};

pub const DEFAULT_TABLE: &str = "hostpolicy";

pub const RAW_PREROUTING: &str = "raw-prerouting";
pub const RAW_OUTPUT: &str = "raw-output";
pub const MANGLE_PREROUTING: &str = "mangle-prerouting";
pub const FILTER_INPUT: &str = "filter-input";
pub const FILTER_FORWARD: &str = "filter-forward";
pub const FILTER_OUTPUT: &str = "filter-output";
pub const MANGLE_POSTROUTING: &str = "mangle-postrouting";

/// Dispatch chains: from the interface to the host endpoint's chain of one stage and direction.
pub const RAW_FROM_HEP: &str = "raw-from-hep";
pub const RAW_TO_HEP: &str = "raw-to-hep";
pub const MANGLE_FROM_HEP: &str = "mangle-from-hep";
pub const FILTER_FROM_HEP: &str = "filter-from-hep";
pub const FILTER_TO_HEP: &str = "filter-to-hep";
pub const FILTER_FROM_HEP_FW: &str = "filter-from-hep-fw";
pub const FILTER_TO_HEP_FW: &str = "filter-to-hep-fw";
/// Normal egress of DNATed local traffic, in mangle postrouting (reuses the `th-` chains).
pub const MANGLE_TO_HEP: &str = "mangle-to-hep";

/// nftables limits names to 256 bytes (NFT_NAME_MAXLEN); longer ones are shortened with a hash.
const MAX_NAME: usize = 200;
/// nftables keeps at most 128 bytes of a rule comment and 127 of a log prefix.
const MAX_COMMENT: usize = 128;
const MAX_LOG_PREFIX: usize = 127;

/// The failsafe chain of a direction: `failsafe-in`/`failsafe-out`, or in raw (untracked stage, which
/// also lets replies of failsafe connections through) `raw-failsafe-in`/`raw-failsafe-out`.
pub fn failsafe_chain(raw: bool, dir: Dir) -> &'static str {
    match (raw, dir) {
        (false, Dir::Ingress) => "failsafe-in",
        (false, Dir::Egress) => "failsafe-out",
        (true, Dir::Ingress) => "raw-failsafe-in",
        (true, Dir::Egress) => "raw-failsafe-out",
    }
}

/// The chain of host endpoint `hep` for one stage and direction.
pub fn endpoint_chain(stage: Stage, dir: Dir, hep: &str) -> String {
    let prefix = match (stage, dir) {
        (Stage::Untracked, Dir::Ingress) => "raw-fh-",
        (Stage::Untracked, Dir::Egress) => "raw-th-",
        (Stage::PreDnat, _) => "pre-fh-",
        (Stage::Normal, Dir::Ingress) => "fh-",
        (Stage::Normal, Dir::Egress) => "th-",
        (Stage::Forward, Dir::Ingress) => "fhfw-",
        (Stage::Forward, Dir::Egress) => "thfw-",
    };
    object_name(prefix, hep)
}

/// The chain of one direction of policy `policy`: `pi-NAME` (ingress rules), `po-NAME` (egress).
pub fn policy_chain(dir: Dir, policy: &str) -> String {
    let prefix = match dir {
        Dir::Ingress => "pi-",
        Dir::Egress => "po-",
    };
    object_name(prefix, policy)
}

/// The shadow chain of one direction of policy `policy` in the would-be set (staged policies):
/// `spi-NAME`, `spo-NAME`.
pub fn shadow_policy_chain(dir: Dir, policy: &str) -> String {
    let prefix = match dir {
        Dir::Ingress => "spi-",
        Dir::Egress => "spo-",
    };
    object_name(prefix, policy)
}

/// The helper chain of rule `index` of policy chain `chain` with named `notPorts`, for family `family`
/// and the `n`th nftables rule of the policy chain.
pub fn exclusion_chain(chain: &str, index: usize, family: Family, n: usize) -> String {
    let f = match family {
        Family::Ipv4 => "v4",
        Family::Ipv6 => "v6",
    };
    object_name("", &format!("{chain}-{index}-{f}-x{n}"))
}

/// The verdict map of a dispatch chain.
pub fn verdict_map(dispatch_chain: &str) -> String {
    format!("{dispatch_chain}-map")
}

/// A set written literally in the configuration (rule nets and ports, failsafe entries) is named after
/// its contents only (`lit-<hash>-<kind>`), so:
/// - a changed list is a new set rather than the old one changing under the rules that still use it:
///   a ruleset swap then never shows old rules with new contents, and the sets can be created before
///   the rules that use them (see `nft::netlink`);
/// - every rule of every policy that writes the same list uses one set.
pub fn literal_set(set_type: SetType, elements: &[SetElement]) -> String {
    let digest = debug_digest(&format_args!("{set_type:?}{elements:?}"));
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("lit-{hash}-{}", set_type_suffix(set_type))
}

/// The stable part of a selector set's name: a hash of the canonical selector and its namespace scope.
/// Selector sets keep their name while their members change (a membership change alone is applied in
/// place, as an incremental update); their kind (and so [`selector_set`]) follows the members.
pub fn selector_set_id(canonical: &str, namespaced: bool) -> String {
    let digest = Sha256::digest(format!("{canonical}|{namespaced}").as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// `sel-<id>-<kind>`, `id` from [`selector_set_id`].
pub fn selector_set(id: &str, set_type: SetType) -> String {
    format!("sel-{id}-{}", set_type_suffix(set_type))
}

/// The last part of a set's name: its type. The kind of a set (hash or interval) cannot change in the
/// kernel, so it is part of the name: a selector set whose members gain a /24 becomes a new set (and new
/// rules), never an element update of the old one.
fn set_type_suffix(t: SetType) -> &'static str {
    match t {
        SetType::Ipv4Addr => "v4",
        SetType::Ipv6Addr => "v6",
        SetType::Ipv4Hosts => "v4h",
        SetType::Ipv6Hosts => "v6h",
        SetType::InetService => "port",
    }
}

/// `prefix` + `id`, shortened with a hash when nftables would refuse the length.
fn object_name(prefix: &str, id: &str) -> String {
    let name = format!("{prefix}{id}");
    if name.len() <= MAX_NAME {
        return name;
    }
    let digest = Sha256::digest(id.as_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let mut cut = MAX_NAME - hash.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", &name[..cut])
}

/// The id of a rule that can decide a packet's fate, for flow records: the first 8 bytes of SHA-256 of
/// what the origin stands for, its place in the files left out, so that a policy moved to another
/// line (or file) keeps its kernel rules, their counters and their id. Carried by the NFLOG prefix
/// ([`flow_prefix`]) and named in the tail chains' names. `salt` is 0 unless two origins of one ruleset
/// meet on one id (the compiler then tries 1, 2, ...).
pub fn flow_id(origin: &Origin, salt: u32) -> u64 {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(96);
    let opt = |v: Option<&str>| v.unwrap_or("-").to_string();
    let _ = write!(
        text,
        "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{salt}",
        origin.kind.as_str(),
        opt(origin.tier.as_deref()),
        opt(origin.policy.as_deref()),
        origin.staged,
        origin.shadow,
        origin.direction.map_or("-", |d| d.as_str()),
        origin.rule.map_or("-".to_string(), |r| r.to_string()),
        origin.action.map_or("-".to_string(), |a| a.to_string()),
        origin.stage.map_or("-", |s| s.as_str()),
        opt(origin.host_endpoint.as_deref()),
        opt(origin.profile.as_deref()),
    );
    let digest = Sha256::digest(text.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// What the NFLOG prefix of flow id `id` says: `hpd1 ` (the format's version) and 16 hex digits.
pub fn flow_prefix(id: u64) -> String {
    format!("{FLOW_PREFIX}{id:016x}")
}

/// The id in an NFLOG prefix written by [`flow_prefix`]; `None` for anybody else's prefix.
pub fn flow_id_of_prefix(prefix: &[u8]) -> Option<u64> {
    let rest = prefix.strip_prefix(FLOW_PREFIX.as_bytes())?;
    let rest = rest.strip_suffix(b"\0").unwrap_or(rest);
    if rest.len() != 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(rest).ok()?, 16).ok()
}

const FLOW_PREFIX: &str = "hpd1 ";

/// The tail chain of a deny (flow id `id`): log (rate-limited) to NFLOG, then drop or reject.
pub fn deny_log_chain(id: u64) -> String {
    format!("dl-{id:016x}")
}

/// The tail chain of an untracked allow: a rate-limited sample to NFLOG, then the allow.
pub fn untracked_log_chain(id: u64) -> String {
    format!("ul-{id:016x}")
}

/// The tail chain of a would-be verdict of the staged evaluation: a rate-limited NFLOG message, return.
pub fn shadow_log_chain(id: u64) -> String {
    format!("sl-{id:016x}")
}

/// Felix's `logPrefix` (`template`) with its `%t` (tier), `%k` (kind), `%n` (name), `%p` (policy)
/// expanded, followed by `": "`.
pub fn log_prefix(template: &str, tier: &str, policy: &str) -> String {
    let expanded = template
        .replace("%t", tier)
        .replace("%k", "gnp")
        .replace("%n", policy)
        .replace("%p", &format!("gnp/{policy}"));
    truncate(&format!("{expanded}: "), MAX_LOG_PREFIX)
}

/// The comment of a rule, for people reading `nft list`: made from its origin for the rules that can
/// decide (`POLICY ingress rule N Action`, rules counted from 1: `ruleset::rule_name`; `HEP: end of
/// tier default deny`, `HEP: no profile matched`,
/// `HEP: profile NAME`...), followed by the file and line it comes from (` (30-nodeport.yaml:41)`:
/// the rule's, or the HostEndpoint's for its defaults); `None` for the others, which carry a fixed
/// text ([`WILDCARD`], ...) or none.
///
/// A policy of another tier than `default` is named `TIER/POLICY` (`platform/guard ingress[0] Deny`),
/// and the start of every tier but the first of a chain says so (`HEP: start of tier platform`): the
/// comments of a configuration without tiers are what they were before tiers existed.
pub fn comment(origin: &Origin) -> Option<String> {
    // The would-be evaluation of staged policies: `staged NAME ...` for a staged policy's rule,
    // `would-be NAME ...` for the copy of an enforced one.
    let role = match (origin.staged, origin.shadow) {
        (true, _) => "staged ",
        (false, true) => "would-be ",
        (false, false) => "",
    };
    let text = match origin.kind {
        Kind::Policy => format!(
            "{role}{}{} {} {}",
            tier_prefix(origin),
            origin.policy.as_deref()?,
            crate::ruleset::rule_name(origin.direction?, origin.rule? as usize),
            origin.action?
        ),
        Kind::Tier if origin.policy.is_none() => format!(
            "{}: start of tier {}",
            origin.host_endpoint.as_deref()?,
            origin.tier.as_deref()?
        ),
        Kind::EndOfTier | Kind::NoPolicy | Kind::Profile => {
            format!(
                "{}: {}",
                origin.host_endpoint.as_deref()?,
                endpoint_default(origin)?
            )
        }
        _ => return None,
    };
    Some(with_position(&text, origin.at.as_ref()))
}

/// Most bytes of a comment the position may take: a file name longer than this keeps its start.
const MAX_POSITION: usize = 64;

/// `TEXT (FILE:LINE)`: the short file name (the path's last component: where the directory is, the
/// reader knows) and the line, cut to the 128 bytes nftables keeps. The position is what an operator
/// greps for, so the text before it is cut first; the line number is never cut, and a file name so
/// long that the position would take more than [`MAX_POSITION`] bytes keeps its start.
fn with_position(text: &str, at: Option<&SourcePos>) -> String {
    let Some(at) = at else {
        return truncate(text, MAX_COMMENT);
    };
    let file = at.file.rsplit('/').next().unwrap_or(&at.file);
    let line = format!(":{}", at.line);
    let file = truncate(file, MAX_POSITION.saturating_sub(line.len()));
    let position = format!(" ({file}{line})");
    let head = truncate(text, MAX_COMMENT.saturating_sub(position.len()));
    format!("{head}{position}")
}

/// What a host endpoint's default rule does, as its comment says after `HEP: ` (and as `status
/// --counters` shows it): `end of tier default deny`, `no profile matched`, `profile NAME`, `no
/// applyOnForward policy, forwarded traffic allowed`.
pub fn endpoint_default(origin: &Origin) -> Option<String> {
    Some(match origin.kind {
        Kind::EndOfTier => match origin.tier.as_deref() {
            Some(tier) if tier != DEFAULT_TIER => format!("end of tier {tier} default deny"),
            _ => "end of tier default deny".into(),
        },
        Kind::NoPolicy if origin.stage == Some(Stage::Forward) => {
            "no applyOnForward policy, forwarded traffic allowed".into()
        }
        Kind::NoPolicy => "no profile matched".into(),
        Kind::Profile => format!("profile {}", origin.profile.as_deref()?),
        _ => return None,
    })
}

/// `TIER/` for a policy of another tier than `default`, else nothing.
fn tier_prefix(origin: &Origin) -> String {
    match origin.tier.as_deref() {
        Some(tier) if tier != DEFAULT_TIER => format!("{tier}/"),
        _ => String::new(),
    }
}

/// The comment of a failsafe rule: `failsafe inbound tcp` (ports of every entry without a net), or
/// `failsafe inbound tcp:192.0.2.0/24,198.51.100.0/24:22`; `what` is `inbound`, `outbound`, `reply to
/// inbound` or `reply to outbound`.
pub fn failsafe_comment(
    what: &str,
    proto: &str,
    nets_and_port: Option<(&[String], u16)>,
) -> String {
    let text = match nets_and_port {
        None => format!("failsafe {what} {proto}"),
        Some((nets, port)) => format!("failsafe {what} {proto}:{}:{port}", nets.join(",")),
    };
    truncate(&text, MAX_COMMENT)
}

/// The regular chain, without rules and referenced by nothing, whose comment carries the content hash:
/// the nftables layer creates it (see `nft::HASH_CHAIN`'s documentation); no compiled chain has this
/// name.
pub const HASH_CHAIN: &str = "hostpolicyd-hash";

/// The comment our table is created with (it cannot change afterwards): see `nft::TABLE_COMMENT`.
pub const TABLE_COMMENT: &str = "hostpolicyd";

/// `name.N`: the `n`th version of set `name` in the kernel (the nftables layer never edits a set in
/// place while rules may use it; see `nft::plan`). The compiler's set names never end in `.N`.
pub fn set_version(name: &str, n: usize) -> String {
    format!("{name}.{n}")
}

/// True when kernel set `kernel` is a version of compiled set `ir`: `ir` itself or `ir.N`.
pub fn is_set_version(kernel: &str, ir: &str) -> bool {
    kernel == ir
        || kernel
            .strip_prefix(ir)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Comment of the dispatch rule that sends everything unclaimed to the wildcard HostEndpoint's chain.
pub const WILDCARD: &str = "wildcard HostEndpoint";
/// Comment of the rules that leave workload interfaces (`cali*`...) alone.
pub const WORKLOAD: &str = "workload interface: not a host endpoint";
/// Comment of filter-forward's last rule.
pub const FORWARDED_MARK: &str = "forwarded: mark for mangle postrouting";
/// Comment of filter-output's rule for DNATed local traffic.
pub const DNATED: &str = "DNATed: checked in mangle postrouting";

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::RuleAction;

    #[test]
    fn long_names_are_cut_with_a_hash_of_the_whole_id() {
        let long = "p".repeat(300);
        let a = policy_chain(Dir::Ingress, &long);
        let b = policy_chain(Dir::Ingress, &format!("{long}x"));
        assert_eq!(a.len(), MAX_NAME);
        assert_ne!(a, b, "names that differ after the cut stay distinct");
        assert!(a.starts_with("pi-ppp"));
        assert_eq!(policy_chain(Dir::Egress, "web"), "po-web");
        assert_eq!(
            endpoint_chain(Stage::PreDnat, Dir::Ingress, "h"),
            "pre-fh-h"
        );
    }

    #[test]
    fn set_versions() {
        assert!(is_set_version("sel-ab-v4", "sel-ab-v4"));
        assert!(is_set_version("sel-ab-v4.1", "sel-ab-v4"));
        assert!(is_set_version("sel-ab-v4.12", "sel-ab-v4"));
        assert!(!is_set_version("sel-ab-v4.", "sel-ab-v4"));
        assert!(!is_set_version("sel-ab-v4.x", "sel-ab-v4"));
        assert!(!is_set_version("sel-ab-v4h", "sel-ab-v4"));
        assert!(!is_set_version("sel-ab", "sel-ab-v4"));
        assert_eq!(set_version("s", 2), "s.2");
    }

    #[test]
    fn comments_come_from_the_origin() {
        let mut o = Origin::new(Kind::Policy);
        o.policy = Some("allow-http".into());
        o.direction = Some(Dir::Ingress);
        o.rule = Some(3);
        o.action = Some(RuleAction::Allow);
        assert_eq!(
            comment(&o).as_deref(),
            Some("allow-http ingress rule 4 Allow")
        );
        let mut d = Origin::new(Kind::NoPolicy);
        d.host_endpoint = Some("h".into());
        d.stage = Some(Stage::Normal);
        assert_eq!(comment(&d).as_deref(), Some("h: no profile matched"));
        d.stage = Some(Stage::Forward);
        assert_eq!(
            comment(&d).as_deref(),
            Some("h: no applyOnForward policy, forwarded traffic allowed")
        );
        assert_eq!(comment(&Origin::new(Kind::Conntrack)), None);
        // Tiers: a policy of another tier than `default` is named with it; so is its end.
        o.tier = Some("platform".into());
        assert_eq!(
            comment(&o).as_deref(),
            Some("platform/allow-http ingress rule 4 Allow")
        );
        o.tier = Some("default".into());
        assert_eq!(
            comment(&o).as_deref(),
            Some("allow-http ingress rule 4 Allow")
        );
        let mut e = Origin::new(Kind::EndOfTier);
        e.host_endpoint = Some("h".into());
        e.tier = Some("default".into());
        assert_eq!(comment(&e).as_deref(), Some("h: end of tier default deny"));
        e.tier = Some("platform".into());
        assert_eq!(
            comment(&e).as_deref(),
            Some("h: end of tier platform default deny")
        );
        e.kind = Kind::Tier;
        assert_eq!(comment(&e).as_deref(), Some("h: start of tier platform"));
        e.policy = Some("p".into());
        assert_eq!(comment(&e), None, "the jumps to policies have no comment");
        o.policy = Some("x".repeat(200).into());
        assert_eq!(comment(&o).unwrap().len(), MAX_COMMENT);
    }

    /// Issue 20 item 7: a comment names the short file name and line; what does not fit in nftables'
    /// 128 bytes is cut from the text before the position, and a very long file name keeps its start.
    #[test]
    fn comments_carry_file_and_line() {
        let at = |file: &str, line: u32| SourcePos {
            file: file.into(),
            line,
            column: 7,
        };
        let mut o = Origin::new(Kind::Policy);
        o.policy = Some("allow-nodeport".into());
        o.direction = Some(Dir::Ingress);
        o.rule = Some(0);
        o.action = Some(RuleAction::Allow);
        o.at = Some(at("/etc/hostpolicy.d/30-nodeport.yaml", 41));
        assert_eq!(
            comment(&o).as_deref(),
            Some("allow-nodeport ingress rule 1 Allow (30-nodeport.yaml:41)")
        );
        let mut d = Origin::new(Kind::NoPolicy);
        d.host_endpoint = Some("h".into());
        d.stage = Some(Stage::Normal);
        d.at = Some(at("hosts.yaml", 3));
        assert_eq!(
            comment(&d).as_deref(),
            Some("h: no profile matched (hosts.yaml:3)")
        );
        // A long policy name is cut; the position stays whole.
        o.policy = Some("p".repeat(200).into());
        let c = comment(&o).unwrap();
        assert_eq!(c.len(), MAX_COMMENT);
        assert!(c.starts_with("ppp"), "{c}");
        assert!(c.ends_with("ppp (30-nodeport.yaml:41)"), "{c}");
        // A long file name keeps its start and the line.
        o.policy = Some("p".into());
        o.at = Some(at(&format!("/d/{}.yaml", "f".repeat(200)), 123456));
        let c = comment(&o).unwrap();
        assert_eq!(
            c,
            format!(
                "p ingress rule 1 Allow ({}:123456)",
                "f".repeat(MAX_POSITION - 7)
            )
        );
        // Multi-byte characters are never split.
        o.policy = Some("é".repeat(100).into());
        o.at = Some(at("t.yaml", 1));
        let c = comment(&o).unwrap();
        assert!(c.len() <= MAX_COMMENT && c.ends_with(" (t.yaml:1)"), "{c}");
    }

    #[test]
    fn log_prefix_expands_felix_placeholders() {
        assert_eq!(
            log_prefix("calico-packet %t %k %n %p", "default", "web"),
            "calico-packet default gnp web gnp/web: "
        );
        assert_eq!(log_prefix(&"a".repeat(300), "t", "p").len(), MAX_LOG_PREFIX);
    }
}
