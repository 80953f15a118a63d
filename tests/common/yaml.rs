//! Small builders for the `projectcalico.org/v3` YAML that scenario tests write into a config directory.

#![allow(dead_code)]

/// A HostEndpoint document. `iface` None: IP-matched (no `interfaceName`); `ips` empty: no `expectedIPs`;
/// `labels` empty: no labels; `profiles` empty: no profiles. Label values are always quoted strings.
pub fn hep(
    name: &str,
    node: &str,
    iface: Option<&str>,
    ips: &[&str],
    labels: &[(&str, &str)],
    profiles: &[&str],
) -> String {
    let mut s = format!(
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: {name}\n"
    );
    if !labels.is_empty() {
        s.push_str("  labels:\n");
        for (k, v) in labels {
            s.push_str(&format!("    {k}: \"{v}\"\n"));
        }
    }
    s.push_str(&format!("spec:\n  node: {node}\n"));
    if let Some(i) = iface {
        s.push_str(&format!("  interfaceName: \"{i}\"\n"));
    }
    if !ips.is_empty() {
        let q: Vec<String> = ips.iter().map(|i| format!("\"{i}\"")).collect();
        s.push_str(&format!("  expectedIPs: [{}]\n", q.join(", ")));
    }
    if !profiles.is_empty() {
        s.push_str(&format!("  profiles: [{}]\n", profiles.join(", ")));
    }
    s
}

/// Joins documents into one multi-document YAML stream.
pub fn docs<S: AsRef<str>>(parts: &[S]) -> String {
    parts
        .iter()
        .map(|p| p.as_ref().trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n"
}
