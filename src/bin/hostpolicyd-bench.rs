//! Scratch: compile timing breakdown (to be replaced by the full benchmark).

use std::path::{Path, PathBuf};
use std::time::Instant;

use hostpolicyd::{compile, load, resolve};

fn hep(name: &str, node: &str, iface: &str, ips: &[String], labels: &[(&str, String)]) -> String {
    let mut s = format!(
        "- apiVersion: projectcalico.org/v3\n  kind: HostEndpoint\n  metadata:\n    name: {name}\n    labels:\n"
    );
    for (k, v) in labels {
        s.push_str(&format!("      {k}: \"{v}\"\n"));
    }
    s.push_str(&format!("  spec:\n    node: {node}\n    interfaceName: {iface}\n    expectedIPs: ["));
    s.push_str(&ips.join(", "));
    s.push_str("]\n");
    s
}

fn heps() -> String {
    let mut s = String::new();
    s.push_str(&hep("node1-c", "node1", "eth-c", &["192.0.2.1".into()], &[("role", "node".into())]));
    s.push_str(&hep("node1-s", "node1", "eth-s", &["198.51.100.1".into()], &[("role", "node".into())]));
    for k in 1..=100 {
        s.push_str(&hep(
            &format!("peer{k:03}-eth0"),
            &format!("peer{k:03}"),
            "eth0",
            &[format!("203.0.113.{k}"), format!("2001:db8:1::{k:x}")],
            &[("role", "peer".into()), ("app", format!("a{}", k % 10))],
        ));
    }
    s
}

fn policy(i: usize) -> String {
    let port = 1024 + (i % 60000);
    let mut s = format!(
        "- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkPolicy\n  metadata:\n    name: bench-{i:05}\n  spec:\n    order: {i}\n    selector: role == 'node'\n    types: [Ingress]\n    ingress:\n"
    );
    if i % 10 == 0 {
        s.push_str(&format!(
            "    - action: Allow\n      protocol: TCP\n      source:\n        selector: app == 'a{}'\n      destination:\n        ports: [{port}]\n",
            (i / 10) % 10
        ));
    } else {
        s.push_str(&format!(
            "    - action: Allow\n      protocol: TCP\n      source:\n        nets: [{}]\n      destination:\n        ports: [{port}, \"{}:{}\"]\n",
            if i % 2 == 0 { format!("198.51.100.{}/32", i % 256) } else { format!("\"2001:db8:2:{i:x}::/64\"") },
            port + 1,
            port + 3
        ));
    }
    if i % 7 == 0 {
        s.push_str("    - action: Deny\n      protocol: UDP\n      destination:\n        ports: [\"6000:6100\"]\n");
    }
    s
}

fn write_policies(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("10-heps.yaml"), heps()).unwrap();
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&policy(i));
    }
    std::fs::write(dir.join("20-policies.yaml"), s).unwrap();
}

fn gns(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: deny-list\n  labels:\n    role: deny-list\nspec:\n  nets:\n",
    );
    for i in 0..n as u32 {
        let a = std::net::Ipv4Addr::from(0x0a00_0000u32 + 2 * i);
        s.push_str(&format!("  - {a}/32\n"));
    }
    s
}

fn cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() {
    let base = PathBuf::from(format!("/tmp/hpbench-{}", std::process::id()));
    for (name, n) in [("p10", 10usize), ("p1000", 1000), ("p10000", 10000), ("p20000", 20000)] {
        let d = base.join(name);
        write_policies(&d, n);
    }
    let d = base.join("gns");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("10-heps.yaml"), heps()).unwrap();
    std::fs::write(d.join("30-gns.yaml"), gns(100_000)).unwrap();
    std::fs::write(
        d.join("31-deny.yaml"),
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: deny-listed\nspec:\n  order: 1\n  preDNAT: true\n  applyOnForward: true\n  selector: role == 'node'\n  ingress:\n  - action: Deny\n    source:\n      selector: role == 'deny-list'\n",
    )
    .unwrap();
    let only: Vec<String> = std::env::args().skip(1).collect();
    // many HEPs, policies selecting nothing
    let d = base.join("heps");
    std::fs::create_dir_all(&d).unwrap();
    let mut h = heps();
    for k in 0..2000 {
        h.push_str(&hep(&format!("x{k}"), &format!("xn{k}"), "eth0", &[format!("2001:db8:5::{k:x}")], &[("role", "x".into()), ("idx", format!("i{k}"))]));
    }
    std::fs::write(d.join("10-heps.yaml"), h).unwrap();
    let mut pp = String::new();
    for i in 0..5000 {
        pp.push_str(&policy(i).replace("role == 'node'", &format!("idx == 'none{i}'")));
    }
    std::fs::write(d.join("20-policies.yaml"), pp).unwrap();
    let d2 = base.join("heps-shared");
    std::fs::create_dir_all(&d2).unwrap();
    std::fs::copy(d.join("10-heps.yaml"), d2.join("10-heps.yaml")).unwrap();
    let mut pp = String::new();
    for i in 0..5000 {
        pp.push_str(&policy(i).replace("role == 'node'", "role == 'absent'"));
    }
    std::fs::write(d2.join("20-policies.yaml"), pp).unwrap();
    if let Ok(n) = std::env::var("COMPILE_ONLY") {
        let d = base.join(&only[0]);
        let loaded = load::load_dir(&d);
        let view = resolve::resolve(&loaded.config, "node1", &[]);
        for _ in 0..n.parse::<usize>().unwrap() {
            let rs = compile::compile(&loaded.config, &view, "hostpolicy");
            std::hint::black_box(rs);
        }
        return;
    }
    if let Ok(n) = std::env::var("RESOLVE_ONLY") {
        for name in &only {
            let d = base.join(name);
            let loaded = load::load_dir(&d);
            for _ in 0..n.parse::<usize>().unwrap() {
                let c0 = cpu();
                std::hint::black_box(resolve::resolve(&loaded.config, "node1", &[]));
                let c1 = cpu();
                let c = &loaded.config;
                let n = c.policies.iter().filter(|p| !c.host_endpoints.iter().any(|h| resolve::policy_selects(p, &h.labels))).count();
                let c2 = cpu();
                println!("{name}: resolve {:.1} ms; old lint loop alone {:.1} ms ({n} select nothing)", (c1 - c0) * 1e3, (c2 - c1) * 1e3);
            }
        }
        return;
    }
    let reps: usize = std::env::var("REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    for name in ["p10", "p1000", "p10000", "p20000", "gns", "heps", "heps-shared"] {
        if !only.is_empty() && !only.iter().any(|o| o == name) { continue; }
        let d = base.join(name);
        for _ in 0..reps {
            let t0 = Instant::now();
            let loaded = load::load_dir(&d);
            assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics.iter().take(3).collect::<Vec<_>>());
            let t1 = Instant::now();
            let view = resolve::resolve(&loaded.config, "node1", &[]);
            let t2 = Instant::now();
            let rs = compile::compile(&loaded.config, &view, "hostpolicy");
            let t3 = Instant::now();
            let h = compile::content_hash(&rs);
            let t4 = Instant::now();
            let c0 = cpu();
            let h2 = compile::content_hash(&rs);
            let c1 = cpu();
            let mut copy = rs.clone();
            copy.comment.clear();
            use sha2::Digest;
            let d = sha2::Sha256::digest(format!("{copy:?}").as_bytes());
            let h3: String = d.iter().map(|b| format!("{b:02x}")).collect();
            let c2 = cpu();
            assert_eq!(h2, h3);
            println!("  cpu: new hash {:.1} ms, old hash {:.1} ms", (c1 - c0) * 1e3, (c2 - c1) * 1e3);
            println!(
                "{name}: load {:?} resolve {:?} compile(incl hash) {:?} hash {:?} rules {} sets {} h {}",
                t1 - t0,
                t2 - t1,
                t3 - t2,
                t4 - t3,
                rs.rule_count(),
                rs.sets.len(),
                &h[..8]
            );
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
