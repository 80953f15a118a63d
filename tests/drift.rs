//! Drift repair (issue 8): with `hostpolicyd run` guarding its table in a network namespace, someone
//! else's `nft delete table inet hostpolicy`, `nft flush ruleset`, and a rule inserted by hand into one of
//! our chains are each undone within 2 seconds: the table is back exactly as before (`nft -j list table`
//! equal, handles and counters aside), a probe connection gets the verdict the policy gives, the repair
//! is logged (`event="drift_repaired"` naming the change) and counted in `status`. A foreign table
//! created afterwards is left alone and is not taken for a change to ours (shown by a barrier: a later
//! change to our table whose repair comes after anything the foreign one could have caused).
//!
//! Topology: tests/common/topology.rs's standard plan: node eth0 192.0.2.1/24, a client 192.0.2.2 in lan0.

mod common;

use std::time::{Duration, Instant};

use common::daemon::open;
use common::daemon::{allow_egress, allow_port, hep_eth0, wait_for, Daemon};
use common::netns::require_root;
use common::probe::Servers;
use common::topology::{nft_json, nft_list, nft_tables, Topology};

/// The promise: the ruleset is back within this long.
const BACK_WITHIN: Duration = Duration::from_secs(2);

fn repairs(s: &serde_json::Value) -> u64 {
    s["drift_repairs"]
        .as_u64()
        .unwrap_or_else(|| panic!("{s:#}"))
}

#[test]
fn deleted_flushed_or_edited_table_is_repaired_and_foreign_tables_are_left_alone() {
    if !require_root(
        "deleted_flushed_or_edited_table_is_repaired_and_foreign_tables_are_left_alone",
    ) {
        return;
    }
    let t = Topology::standard();
    let _servers = Servers::start(&t.node, &[8080, 8081], &[]);
    let dir = t.hpd.config_dir();
    std::fs::write(dir.join("hep.yaml"), hep_eth0()).unwrap();
    std::fs::write(dir.join("allow-egress.yaml"), allow_egress()).unwrap();
    std::fs::write(dir.join("allow-8080.yaml"), allow_port("allow-8080", 8080)).unwrap();

    let d = Daemon::start(&t.node, &t.hpd, &[]);
    let s = d.wait_ready(&t.node, &t.hpd);
    assert_eq!(s["last_result"], "applied", "{s:#}");
    // The nftables subscription is made on its own thread: changes made before it would go unseen.
    d.wait_status(&t.node, &t.hpd, "the drift watch", |s| {
        s["daemon"]["drift_watch"] == "active"
    });
    let before = nft_json(&t.node, "inet", "hostpolicy").expect("our table");
    assert!(open(&t, 8080), "allowed by allow-8080");
    assert!(!open(&t, 8081), "HEP default deny");

    let cases: [(&str, &[&str], &str); 3] = [
        (
            "nft delete table",
            &["delete", "table", "inet", "hostpolicy"],
            "table deleted",
        ),
        (
            "nft flush ruleset",
            &["flush", "ruleset"],
            "ruleset flushed",
        ),
        (
            "a rule inserted by hand",
            &[
                "insert",
                "rule",
                "inet",
                "hostpolicy",
                "filter-input",
                "tcp",
                "dport",
                "8081",
                "accept",
            ],
            "1 rule added to chain filter-input",
        ),
    ];
    for (i, (what, cmd, change)) in cases.iter().enumerate() {
        let n = repairs(&d.status(&t.node, &t.hpd).unwrap());
        assert_eq!(n, i as u64, "{what}: repairs so far");
        if cmd[0] == "flush" {
            // Another tool's table, which `flush ruleset` deletes too (and the log says so).
            t.node.exec_ok("nft", ["add", "table", "ip", "bystander"]);
        }
        t.node.exec_ok("nft", *cmd);
        let start = Instant::now();
        let back = wait_for(BACK_WITHIN, || {
            (nft_json(&t.node, "inet", "hostpolicy").as_ref() == Some(&before)).then_some(())
        });
        let took = start.elapsed();
        assert!(
            back.is_some(),
            "{what}: the table is not back as before within {BACK_WITHIN:?}; now:\n{}\nlog:\n{}",
            nft_list(&t.node, "inet", "hostpolicy").unwrap_or_else(|| "(no table)".into()),
            d.log()
        );
        eprintln!("{what}: table back as before after {} ms", took.as_millis());
        assert!(open(&t, 8080), "{what}: 8080 allowed again\n{}", d.log());
        assert!(!open(&t, 8081), "{what}: 8081 denied again\n{}", d.log());

        let s = d.wait_status(&t.node, &t.hpd, "the repair counted", |s| {
            repairs(s) == n + 1
        });
        let last = &s["last_drift"];
        assert!(
            last["changes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c.as_str().unwrap().contains(change)),
            "{what}: {last:#}"
        );
        assert_eq!(last["repaired"], true, "{last:#}");
        assert!(
            last["by"][0]
                .as_str()
                .unwrap_or("")
                .starts_with("nft (pid "),
            "{what}: the writer is named: {last:#}"
        );
        let line = d.wait_log(&["event=\"drift_repaired\"", change]);
        assert!(line.contains("WARN"), "{line}");
    }
    let s = d.status(&t.node, &t.hpd).unwrap();
    assert_eq!(s["generation"], 1, "repairs are not new generations: {s:#}");
    assert_eq!(s["applies"], 1, "{s:#}");

    // A foreign table: left alone, and not even a look at ours. No sleep tells that nothing happened:
    // a barrier does. After the foreign table, our table is deleted once more by one `nft` process;
    // nf_tables notifications reach the daemon in order, so whatever the foreign table's changes made
    // it do was done before it repairs that deletion.
    let log_mark = d.log().len();
    t.node.exec_ok("nft", ["add", "table", "inet", "foreign"]);
    t.node.exec_ok(
        "nft",
        [
            "add", "chain", "inet", "foreign", "input", "{", "type", "filter", "hook", "input",
            "priority", "10", ";", "}",
        ],
    );
    t.node.exec_ok(
        "nft",
        ["add", "rule", "inet", "foreign", "input", "counter"],
    );
    t.node
        .exec_ok("nft", ["delete", "table", "inet", "hostpolicy"]);
    let s = d.wait_status(&t.node, &t.hpd, "the barrier's repair", |s| repairs(s) == 4);
    let by = s["last_drift"]["by"].as_array().unwrap();
    assert_eq!(
        by.len(),
        1,
        "only the barrier's writer; the foreign table's writers are not ours to name: {s:#}"
    );
    let since = &d.log()[log_mark..];
    assert!(
        !since.contains("was written to by"),
        "the foreign table's changes were taken for changes to ours:\n{since}"
    );
    assert_eq!(
        since.matches("event=\"drift_repaired\"").count(),
        1,
        "one repair, the barrier's:\n{since}"
    );
    assert!(nft_tables(&t.node).contains(&"inet foreign".to_string()));
    assert_eq!(
        nft_json(&t.node, "inet", "hostpolicy").as_ref(),
        Some(&before)
    );
}

/// Issue 18: right after our own write the drift guard reads back only the chains the write changed
/// (and the content hash's) and takes the others from its previous baseline, instead of the whole
/// table. A foreign rule put into a chain our reload left alone, just before the reload, is therefore
/// not taken for ours: the next look finds it (and the guard repairs it). Without foreign changes the
/// partial read is what a full read gives.
/// The content hash a compiled ruleset carries in its comment.
fn hash(r: &hostpolicyd::ruleset::Ruleset) -> String {
    hostpolicyd::compile::hash_from_comment(&r.comment)
        .unwrap()
        .to_string()
}

/// `ruleset` applied into a new namespace `name`, and the drift guard's expectation armed on what the
/// kernel then holds (as `Guard::arm` does after our own write).
fn applied_and_armed(
    name: &str,
    ruleset: &hostpolicyd::ruleset::Ruleset,
) -> (
    common::netns::NetNs,
    hostpolicyd::daemon::drift::Expectation,
) {
    use hostpolicyd::daemon::drift::{chain_digests, set_digests, Expectation};
    use hostpolicyd::daemon::nftmon::fingerprint;
    use hostpolicyd::nft::{Dataplane, Netlink};
    let ns = common::netns::NetNs::new(name);
    ns.run(|| Netlink::new().and_then(|mut nl| nl.apply(ruleset)))
        .unwrap();
    let print = ns.run(|| fingerprint("hostpolicy")).unwrap().unwrap();
    let (expectation, fits) = Expectation::with_digests(
        &hash(ruleset),
        ruleset,
        Some(print),
        set_digests(ruleset),
        chain_digests(ruleset),
    );
    assert!(fits, "the applied table holds the compiled layout");
    (ns, expectation)
}

#[test]
fn a_foreign_change_to_a_chain_our_reload_left_alone_is_still_drift() {
    if !require_root("a_foreign_change_to_a_chain_our_reload_left_alone_is_still_drift") {
        return;
    }
    use hostpolicyd::daemon::drift::{chain_digests, diff, set_digests, Expectation};
    use hostpolicyd::daemon::nftmon::{fingerprint, fingerprint_known};
    use hostpolicyd::nft::{Dataplane, Netlink};
    use hostpolicyd::ruleset::Ruleset;

    let compile = |port: u16| -> Ruleset {
        let files = vec![
            ("hep.yaml".to_string(), hep_eth0()),
            ("a.yaml".to_string(), allow_port("allow-8080", 8080)),
            ("b.yaml".to_string(), allow_port("allow-other", port)),
        ];
        let loaded = hostpolicyd::config::load::load_sources(&files);
        let c = hostpolicyd::pipeline::build(loaded, "node1", &[], "hostpolicy", false)
            .unwrap_or_else(|e| panic!("{:?}", e.diagnostics));
        (*c.ruleset).clone()
    };
    let (a, b) = (compile(8081), compile(9090));
    let changed: Vec<&str> = b
        .chains
        .iter()
        .filter(|c| !a.chains.contains(c))
        .map(|c| c.name.as_str())
        .collect();
    assert!(!changed.is_empty(), "the second ruleset changes a chain");
    let left_alone = a
        .chains
        .iter()
        .find(|c| c.base.is_none() && !c.rules.is_empty() && b.chains.contains(c))
        .expect("a chain both rulesets have")
        .name
        .clone();

    let (ns, exp_a) = applied_and_armed("driftknown", &a);

    // Someone else adds a rule to a chain our next write leaves alone; then our write.
    ns.exec_ok(
        "nft",
        [
            "add",
            "rule",
            "inet",
            "hostpolicy",
            left_alone.as_str(),
            "counter",
        ],
    );
    ns.run(|| Netlink::new().and_then(|mut nl| nl.update(&a, &b)))
        .unwrap();
    let known = exp_a.known_after(&b, &set_digests(&b), &chain_digests(&b));
    assert!(known.chains.contains_key(&left_alone));
    for c in &changed {
        assert!(!known.chains.contains_key(*c), "{c} is read back");
    }
    let baseline = ns
        .run(|| fingerprint_known("hostpolicy", &known))
        .unwrap()
        .unwrap();
    let (exp_b, fits) = Expectation::with_digests(
        &hash(&b),
        &b,
        Some(baseline.clone()),
        set_digests(&b),
        chain_digests(&b),
    );
    assert!(fits);
    let now = ns.run(|| fingerprint("hostpolicy")).unwrap().unwrap();
    assert_eq!(
        diff(&exp_b, &now),
        [format!("1 rule added to chain {left_alone}")],
        "the foreign rule is drift, not part of the baseline"
    );
    for c in &changed {
        assert_eq!(
            baseline.chains[*c], now.chains[*c],
            "{c} as the kernel holds it"
        );
    }

    // The table as we wrote it (the foreign rule gone): the partial read is the full one.
    ns.run(|| Netlink::new().and_then(|mut nl| nl.apply(&b)))
        .unwrap();
    let full = ns.run(|| fingerprint("hostpolicy")).unwrap().unwrap();
    let partial = ns
        .run(|| fingerprint_known("hostpolicy", &known))
        .unwrap()
        .unwrap();
    assert_eq!(partial, full);
    assert!(diff(&exp_b, &full).is_empty());
}

/// Issue 18 review: a reload that changes a set's elements and a rule elsewhere goes through the
/// staged swap, which puts the new elements into a new version of the set (`S.1`) and refills the
/// chains that look it up. Those chains compile byte for byte the same, but their kernel rules now
/// look up `S.1`: the guard must read them back after the write, not take the previous baseline's
/// (which looked up `S`), or the next look reports drift in them and every repair "fails".
#[test]
fn a_chain_whose_set_the_staged_swap_renamed_is_read_back_not_taken_from_the_baseline() {
    if !require_root(
        "a_chain_whose_set_the_staged_swap_renamed_is_read_back_not_taken_from_the_baseline",
    ) {
        return;
    }
    use hostpolicyd::daemon::drift::{chain_digests, diff, set_digests, Expectation};
    use hostpolicyd::daemon::nftmon::{fingerprint, fingerprint_known};
    use hostpolicyd::nft::{Dataplane, Netlink};
    use hostpolicyd::ruleset::Ruleset;

    // Policy ssh-from allows SSH from the GlobalNetworkSet `admins` (a selector set, named after the
    // selector: its name stays when its elements change).
    let admins = |nets: &str| {
        format!(
            "apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: admins
  labels: {{role: admin}}
spec:
  nets: [{nets}]
"
        )
    };
    let ssh_from = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: ssh-from
spec:
  order: 10
  selector: \"role == 'web'\"
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: \"role == 'admin'\"
    destination:
      ports: [22]
"
    .to_string();
    let compile = |nets: &str, port: u16| -> Ruleset {
        let files = vec![
            ("hep.yaml".to_string(), hep_eth0()),
            ("admins.yaml".to_string(), admins(nets)),
            ("a.yaml".to_string(), ssh_from.clone()),
            ("b.yaml".to_string(), allow_port("allow-other", port)),
        ];
        let loaded = hostpolicyd::config::load::load_sources(&files);
        let c = hostpolicyd::pipeline::build(loaded, "node1", &[], "hostpolicy", false)
            .unwrap_or_else(|e| panic!("{:?}", e.diagnostics));
        (*c.ruleset).clone()
    };
    // The set of ssh-from's sources changes, and allow-other's port.
    let a = compile("192.0.2.1/32, 192.0.2.2/32, 198.51.100.0/24", 8081);
    let b = compile("192.0.2.1/32, 192.0.2.3/32, 198.51.100.0/24", 9090);
    let changed_set = b
        .sets
        .iter()
        .find(|s| a.set(&s.name).is_some_and(|old| old != *s))
        .expect("a set both rulesets name, with other elements")
        .name
        .clone();
    let user = a
        .chains
        .iter()
        .find(|c| {
            b.chains.contains(c)
                && c.rules.iter().any(|r| {
                    r.matches.iter().any(|m| {
                        matches!(m, hostpolicyd::ruleset::Match::Addr { set, .. } if *set == changed_set)
                    })
                })
        })
        .expect("a chain that looks the set up and compiles the same")
        .name
        .clone();
    assert!(
        b.chains.iter().any(|c| !a.chains.contains(c)),
        "a rule elsewhere changes too"
    );

    let (ns, exp_a) = applied_and_armed("driftrenamed", &a);

    ns.run(|| Netlink::new().and_then(|mut nl| nl.update(&a, &b)))
        .unwrap();
    let full = ns.run(|| fingerprint("hostpolicy")).unwrap().unwrap();
    assert!(
        !full.sets.contains_key(&changed_set),
        "the staged swap put {changed_set}'s new elements into a new version: {:?}",
        full.sets.keys().collect::<Vec<_>>()
    );

    // What `Guard::arm` reads after the write.
    let known = exp_a.known_after(&b, &set_digests(&b), &chain_digests(&b));
    assert!(!known.chains.contains_key(&user), "{user} is read back");
    let baseline = ns
        .run(|| fingerprint_known("hostpolicy", &known))
        .unwrap()
        .unwrap();
    assert_eq!(
        baseline, full,
        "the armed baseline is what a full read gives"
    );
    let (exp_b, fits) = Expectation::with_digests(
        &hash(&b),
        &b,
        Some(baseline),
        set_digests(&b),
        chain_digests(&b),
    );
    assert!(fits);
    assert_eq!(
        diff(&exp_b, &full),
        Vec::<String>::new(),
        "no drift after our own write"
    );
}

#[test]
fn a_foreign_change_kept_by_our_edit_by_handle_is_not_taken_for_ours() {
    if !require_root("a_foreign_change_kept_by_our_edit_by_handle_is_not_taken_for_ours") {
        return;
    }
    use hostpolicyd::daemon::drift::edits_hold;
    use hostpolicyd::daemon::nftmon::fingerprint;
    use hostpolicyd::nft::{Dataplane, Handles, Netlink};
    use hostpolicyd::ruleset::{Ruleset, Verdict};

    // Twelve policies, and the same with `p-05b` (between p-05 and p-06): the endpoint chain gets
    // two rules more, which the switch inserts by handle.
    let compile = |extra: bool| -> Ruleset {
        let mut files = vec![
            ("hep.yaml".to_string(), hep_eth0()),
            ("allow-egress.yaml".to_string(), allow_egress()),
        ];
        for i in 0..12u16 {
            let name = format!("p-{i:02}");
            files.push((format!("{name}.yaml"), allow_port(&name, 9000 + i)));
        }
        if extra {
            files.push(("p-05b.yaml".into(), allow_port("p-05b", 8081)));
        }
        let loaded = hostpolicyd::config::load::load_sources(&files);
        let c = hostpolicyd::pipeline::build(loaded, "node1", &[], "hostpolicy", false)
            .unwrap_or_else(|e| panic!("{:?}", e.diagnostics));
        (*c.ruleset).clone()
    };
    let (a, b) = (compile(false), compile(true));
    let ep = a
        .chains
        .iter()
        .max_by_key(|c| {
            c.rules
                .iter()
                .filter(|r| matches!(&r.verdict, Some(Verdict::Jump(t)) if t.starts_with("pi-")))
                .count()
        })
        .unwrap()
        .name
        .clone();

    // Applies `a`, hands the dataplane the handles read back, lets `foreign` change the table, then
    // switches to `b`: whether the edited chain holds what the edit kept, by the guard's check.
    let run = |name: &str, foreign: &dyn Fn(&common::netns::NetNs, u64)| -> bool {
        let ns = common::netns::NetNs::new(name);
        let mut nl = ns.run(Netlink::new).unwrap();
        ns.run(|| nl.apply(&a)).unwrap();
        let base = ns.run(|| fingerprint("hostpolicy")).unwrap().unwrap();
        let handles = Handles {
            table: base.table,
            chains: base
                .chains
                .iter()
                .map(|(n, c)| (n.clone(), c.handles.clone()))
                .collect(),
        };
        nl.learn_handles(&a.comment, handles);
        // A rule the edit keeps: the last one of the chain.
        foreign(&ns, *base.chains[&ep].handles.last().unwrap());
        ns.run(|| nl.update(&a, &b)).unwrap();
        let edited = nl.take_edited();
        assert!(
            edited.iter().any(|(c, _)| *c == ep),
            "the endpoint chain was edited by handle: {edited:?}"
        );
        let now = ns.run(|| fingerprint("hostpolicy")).unwrap().unwrap();
        edits_hold(&edited, Some(&base), &now)
    };
    assert!(
        run("drifthandle", &|_, _| {}),
        "our own edit holds what it kept"
    );
    // Someone inserts a rule before a rule our edit keeps: the edit leaves it there, and the guard
    // must not take it for ours.
    assert!(!run("drifthandleins", &|ns, h| {
        ns.exec_ok(
            "nft",
            [
                "insert",
                "rule",
                "inet",
                "hostpolicy",
                &ep,
                "position",
                &h.to_string(),
                "accept",
            ],
        );
    }));
    // Someone replaces a kept rule in place (same handle, another rule).
    assert!(!run("drifthandlerep", &|ns, h| {
        ns.exec_ok(
            "nft",
            [
                "replace",
                "rule",
                "inet",
                "hostpolicy",
                &ep,
                "handle",
                &h.to_string(),
                "accept",
            ],
        );
    }));
}

/// handlesfix item 1: what the daemon reads right after its write (`nftmon::read_chains`, the chains
/// the write made or changed) is what the guard's later read finds for those chains, rules and
/// handles alike, while nobody else writes; a rule someone replaces in place in between (same
/// handle, same count: what the layout check cannot see) makes them differ, so the guard takes it for
/// drift instead of learning it.
#[test]
fn a_rule_replaced_in_place_after_our_write_differs_from_the_read_right_after_it() {
    if !require_root(
        "a_rule_replaced_in_place_after_our_write_differs_from_the_read_right_after_it",
    ) {
        return;
    }
    use hostpolicyd::daemon::nftmon::{fingerprint, read_chains};
    use hostpolicyd::nft::{Dataplane, Netlink};
    let files = vec![
        ("hep.yaml".to_string(), hep_eth0()),
        ("allow-egress.yaml".to_string(), allow_egress()),
        ("p-1.yaml".to_string(), allow_port("p-1", 9001)),
        ("p-2.yaml".to_string(), allow_port("p-2", 9002)),
    ];
    let loaded = hostpolicyd::config::load::load_sources(&files);
    let c = hostpolicyd::pipeline::build(loaded, "node1", &[], "hostpolicy", false)
        .unwrap_or_else(|e| panic!("{:?}", e.diagnostics));
    let rs = (*c.ruleset).clone();
    let ns = common::netns::NetNs::new("driftreadback");
    let mut nl = ns.run(Netlink::new).unwrap();
    ns.run(|| nl.apply(&rs)).unwrap();
    let wrote = nl.wrote();
    assert_eq!(
        wrote.len(),
        rs.chains.len(),
        "a fresh apply writes every chain"
    );
    let written = ns
        .run(|| read_chains("hostpolicy", &wrote))
        .unwrap()
        .unwrap();
    let now = ns.run(|| fingerprint("hostpolicy")).unwrap().unwrap();
    assert_eq!(written.table, now.table);
    for name in &wrote {
        let (w, n) = (&written.chains[name], &now.chains[name]);
        assert_eq!((&w.rules, &w.handles), (&n.rules, &n.handles), "{name}");
    }
    // Someone replaces the last rule of a chain with rules in place.
    let (chain, c) = written
        .chains
        .iter()
        .filter(|(_, c)| c.rules.len() >= 2)
        .max_by_key(|(_, c)| c.rules.len())
        .unwrap();
    let h = *c.handles.last().unwrap();
    ns.exec_ok(
        "nft",
        [
            "replace",
            "rule",
            "inet",
            "hostpolicy",
            chain,
            "handle",
            &h.to_string(),
            "accept",
        ],
    );
    let later = ns.run(|| fingerprint("hostpolicy")).unwrap().unwrap();
    let l = &later.chains[chain];
    assert_eq!(l.handles, c.handles, "same handles");
    assert_ne!(
        l.rules, c.rules,
        "other content: the guard sees a change since our write"
    );
}
