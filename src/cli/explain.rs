//! `hostpolicyd explain`: the command line around [`crate::analysis::explain`].
//!
//! Reads the configuration directory (`--config-dir`), resolves it for `--node-name` with the live
//! interfaces, and prints the verdict of one packet and the path it took; with `--against OLD_DIR`,
//! under both configurations (the old one first). No kernel, no root.
//! Exit status: 0 whatever the verdict; 1 invalid configuration; 64 bad flags.

use std::net::{IpAddr, SocketAddr};

use crate::analysis::explain::{explain, Packet, Path};
use crate::config::model::proto;
use crate::exit;
use crate::pipeline::{self, Input};
use crate::resolve::resolve;
use crate::settings::Settings;

/// The packet to explain. `--in` alone: delivered to a local process; `--out` alone: sent by a local
/// process; both: forwarded (`--forwarded` says so explicitly).
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// Interface the packet arrives on.
    #[arg(long = "in", value_name = "IFACE")]
    pub in_iface: Option<String>,
    /// Interface the packet leaves by.
    #[arg(long = "out", value_name = "IFACE")]
    pub out_iface: Option<String>,
    /// The packet is routed through the node (needs --in and --out).
    #[arg(long)]
    pub forwarded: bool,
    /// Source address.
    #[arg(long, value_name = "ADDR")]
    pub src: IpAddr,
    /// Destination address (before DNAT).
    #[arg(long, value_name = "ADDR")]
    pub dst: IpAddr,
    /// tcp, udp, icmp, icmpv6, sctp, udplite, or a protocol number (1-255).
    #[arg(long, value_name = "PROTO", default_value = "tcp", value_parser = parse_protocol)]
    pub proto: u8,
    /// Source port (tcp, udp, sctp). Without it, rules that match source ports do not match.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub sport: Option<u16>,
    /// Destination port (tcp, udp, sctp), before DNAT.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub dport: Option<u16>,
    /// ICMP / ICMPv6 type [default: echo request, 8 or 128].
    #[arg(long, value_name = "TYPE")]
    pub icmp_type: Option<u8>,
    /// ICMP / ICMPv6 code [default: 0].
    #[arg(long, value_name = "CODE")]
    pub icmp_code: Option<u8>,
    /// The destination after DNAT (e.g. kube-proxy's node port to a pod): ADDR or ADDR:PORT ([V6]:PORT).
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_dnat)]
    pub dnat_dst: Option<(IpAddr, Option<u16>)>,
    /// The packet belongs to a connection conntrack already accepted (a reply, a later packet):
    /// only untracked (doNotTrack) policy still applies to it.
    #[arg(long)]
    pub established: bool,
    /// Also evaluate the packet under the configuration in this directory (the old one), and say
    /// whether its verdict changes.
    #[arg(long, value_name = "OLD_DIR")]
    pub against: Option<std::path::PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

fn parse_protocol(s: &str) -> Result<u8, String> {
    let named = [
        ("tcp", proto::TCP),
        ("udp", proto::UDP),
        ("icmp", proto::ICMP),
        ("icmpv6", proto::ICMPV6),
        ("sctp", proto::SCTP),
        ("udplite", proto::UDPLITE),
    ];
    if let Some((_, p)) = named.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
        return Ok(*p);
    }
    match s.parse::<u8>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "`{s}` is not a protocol: use tcp, udp, icmp, icmpv6, sctp, udplite or a number 1-255"
        )),
    }
}

fn parse_dnat(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    match s.parse::<SocketAddr>() {
        Ok(sa) if sa.port() != 0 => Ok((sa.ip(), Some(sa.port()))),
        _ => Err(format!(
            "`{s}` is not ADDR or ADDR:PORT (an IPv6 address with a port is written [ADDR]:PORT)"
        )),
    }
}

/// The directory's configuration, or None (its errors printed) when it is invalid.
fn valid(dir: &std::path::Path) -> Option<crate::config::load::Loaded> {
    let loaded = pipeline::load(&Input::Dir(dir.to_path_buf()));
    if loaded.has_errors() {
        for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
            errln!("{d}");
        }
        errln!(
            "hostpolicyd: the configuration in {} is invalid: nothing to explain",
            dir.display()
        );
        return None;
    }
    Some(loaded)
}

fn has_ports(p: u8) -> bool {
    matches!(p, proto::TCP | proto::UDP | proto::SCTP | proto::UDPLITE)
}

/// The packet the flags describe, or the usage error.
pub fn packet(args: &ExplainArgs) -> Result<Packet, String> {
    let path = match (&args.in_iface, &args.out_iface) {
        (Some(i), Some(o)) => Path::Forwarded { in_iface: i.clone(), out_iface: o.clone() },
        _ if args.forwarded => return Err("--forwarded needs both --in and --out".into()),
        (Some(i), None) => Path::Inbound { iface: i.clone() },
        (None, Some(o)) => Path::Outbound { iface: o.clone() },
        (None, None) => {
            return Err("give --in IFACE (to a local process), --out IFACE (from a local process) or both (forwarded)".into())
        }
    };
    if args.src.is_ipv4() != args.dst.is_ipv4() {
        return Err(format!(
            "--src {} and --dst {} are of different IP families",
            args.src, args.dst
        ));
    }
    if let Some((addr, port)) = args.dnat_dst {
        if addr.is_ipv4() != args.dst.is_ipv4() {
            return Err(format!(
                "--dnat-dst {addr} is not of the family of --dst {}",
                args.dst
            ));
        }
        if port.is_some() && !has_ports(args.proto) {
            return Err(
                "--dnat-dst with a port needs a protocol with ports (tcp, udp, sctp, udplite)"
                    .into(),
            );
        }
    }
    let p = args.proto;
    if (args.sport.is_some() || args.dport.is_some()) && !has_ports(p) {
        return Err(
            "--sport and --dport need a protocol with ports (tcp, udp, sctp, udplite)".into(),
        );
    }
    let icmp = p == proto::ICMP || p == proto::ICMPV6;
    if (args.icmp_type.is_some() || args.icmp_code.is_some()) && !icmp {
        return Err("--icmp-type and --icmp-code need --proto icmp or icmpv6".into());
    }
    if p == proto::ICMP && args.src.is_ipv6() {
        return Err("ICMP over IPv6 is --proto icmpv6".into());
    }
    if p == proto::ICMPV6 && args.src.is_ipv4() {
        return Err("ICMPv6 needs IPv6 addresses (ICMP over IPv4 is --proto icmp)".into());
    }
    let mut packet = Packet::new(path, args.src, args.dst, p);
    packet.sport = args.sport;
    packet.dport = args.dport;
    packet.dnat = args.dnat_dst;
    packet.established = args.established;
    if icmp {
        packet.icmp_type = Some(
            args.icmp_type
                .unwrap_or(if p == proto::ICMP { 8 } else { 128 }),
        );
        packet.icmp_code = Some(args.icmp_code.unwrap_or(0));
    }
    Ok(packet)
}

pub fn run(settings: &Settings, args: ExplainArgs) -> u8 {
    let packet = match packet(&args) {
        Ok(p) => p,
        Err(e) => {
            errln!("hostpolicyd explain: {e}");
            return exit::USAGE;
        }
    };
    let Some(loaded) = valid(&settings.config_dir) else {
        return exit::INVALID;
    };
    let old = match &args.against {
        Some(dir) => match valid(dir) {
            Some(l) => Some(l),
            None => return exit::INVALID,
        },
        None => None,
    };
    let interfaces = crate::host::iface::current().unwrap_or_else(|e| {
        errln!("hostpolicyd: warning: cannot list interfaces ({e}); IP-matched HostEndpoints match nothing");
        Vec::new()
    });
    for name in [&args.in_iface, &args.out_iface].into_iter().flatten() {
        if !interfaces.iter().any(|i| &i.name == name) {
            errln!(
                "hostpolicyd: note: there is no interface {name} here; only HostEndpoints naming it (and a \"*\" one) can govern it"
            );
        }
    }
    let view = resolve(&loaded.config, &settings.node, &interfaces);
    let explanation = explain(&loaded.config, &view, &packet);
    if let (Some(old), Some(dir)) = (&old, &args.against) {
        let old_view = resolve(&old.config, &settings.node, &interfaces);
        let before = explain(&old.config, &old_view, &packet);
        let changed = before.verdict != explanation.verdict;
        if args.json {
            #[derive(serde::Serialize)]
            struct Both<'a> {
                before: &'a crate::analysis::explain::Explanation,
                after: &'a crate::analysis::explain::Explanation,
                changed: bool,
            }
            match serde_json::to_string_pretty(&Both {
                before: &before,
                after: &explanation,
                changed,
            }) {
                Ok(text) => outln!("{text}"),
                Err(e) => {
                    errln!("hostpolicyd: error: {e}");
                    return exit::INTERNAL;
                }
            }
        } else {
            out!(
                "node: {}\nbefore ({}):\n{before}after ({}):\n{explanation}verdict: {}\n",
                settings.node,
                dir.display(),
                settings.config_dir.display(),
                if changed {
                    format!("{} -> {} (changed)", before.verdict, explanation.verdict)
                } else {
                    format!("{} (unchanged)", explanation.verdict)
                }
            );
        }
        return exit::OK;
    }
    if args.json {
        match serde_json::to_string_pretty(&explanation) {
            Ok(text) => outln!("{text}"),
            Err(e) => {
                errln!("hostpolicyd: error: {e}");
                return exit::INTERNAL;
            }
        }
    } else {
        out!("node: {}\n{explanation}", settings.node);
    }
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: ExplainArgs,
    }

    fn parse(line: &str) -> Result<Packet, String> {
        let argv = std::iter::once("explain").chain(line.split_whitespace());
        let t = T::try_parse_from(argv).map_err(|e| e.to_string())?;
        packet(&t.args)
    }

    #[test]
    fn flags_to_packet() {
        let p = parse("--in eth0 --src 192.0.2.2 --dst 192.0.2.1 --dport 80").unwrap();
        assert_eq!(
            p.path,
            Path::Inbound {
                iface: "eth0".into()
            }
        );
        assert_eq!((p.protocol, p.sport, p.dport), (proto::TCP, None, Some(80)));
        let p =
            parse("--in eth0 --out eth1 --src 192.0.2.2 --dst 198.51.100.9 --proto 17 --dport 53")
                .unwrap();
        assert!(matches!(p.path, Path::Forwarded { .. }));
        let p = parse(
            "--in eth0 --out eth1 --forwarded --src 192.0.2.2 --dst 198.51.100.9 --proto UDP",
        )
        .unwrap();
        assert_eq!(p.protocol, proto::UDP);
        let p = parse("--out eth0 --src 2001:db8::1 --dst 2001:db8::2 --proto icmpv6").unwrap();
        assert_eq!((p.icmp_type, p.icmp_code), (Some(128), Some(0)));
        let p = parse("--in eth0 --src 203.0.113.7 --dst 198.51.100.4 --dport 31852 --dnat-dst 198.51.100.200:8080").unwrap();
        assert_eq!(
            p.dnat,
            Some(("198.51.100.200".parse().unwrap(), Some(8080)))
        );
        let p =
            parse("--in eth0 --src 2001:db8::7 --dst 2001:db8::4 --dnat-dst [2001:db8::200]:80")
                .unwrap();
        assert_eq!(p.dnat, Some(("2001:db8::200".parse().unwrap(), Some(80))));
    }

    #[test]
    fn bad_flags() {
        for (line, why) in [
            ("--src 192.0.2.2 --dst 192.0.2.1", "give --in"),
            (
                "--in eth0 --forwarded --src 192.0.2.2 --dst 192.0.2.1",
                "--forwarded needs both",
            ),
            (
                "--in eth0 --src 192.0.2.2 --dst 2001:db8::1",
                "different IP families",
            ),
            (
                "--in eth0 --src 192.0.2.2 --dst 192.0.2.1 --proto icmp --dport 80",
                "need a protocol with ports",
            ),
            (
                "--in eth0 --src 192.0.2.2 --dst 192.0.2.1 --icmp-type 8",
                "need --proto icmp",
            ),
            (
                "--in eth0 --src 2001:db8::2 --dst 2001:db8::1 --proto icmp",
                "icmpv6",
            ),
            (
                "--in eth0 --src 192.0.2.2 --dst 192.0.2.1 --proto gre",
                "not a protocol",
            ),
            (
                "--in eth0 --src 192.0.2.2 --dst 192.0.2.1 --dnat-dst 192.0.2.9:0",
                "not ADDR or ADDR:PORT",
            ),
            (
                "--in eth0 --src 192.0.2.2 --dst 192.0.2.1 --dport 0",
                "0 is not in 1..=65535",
            ),
        ] {
            let e = parse(line).unwrap_err();
            assert!(e.contains(why), "{line}: {e}");
        }
    }
}
