//! FelixConfiguration `spec`: the failsafe lists (spec §4.2) and the few settings hostpolicyd uses.
//!
//! Other well-known Felix settings are accepted with a warning that they have no effect, so that a
//! configuration copied from a Calico cluster loads. Anything else is an error: a misspelt failsafe
//! field silently falling back to the defaults could lock someone out (or leave ports open).

use crate::config::model::{proto, DenyAction, FelixConfiguration, ProtoPort};
use crate::config::yaml::{Key, Node, Value};

use super::fields::{boolean, integer, list, object, string, unknown_field, Cx};
use super::meta::Meta;
use super::net::rule_net;

const IMPLEMENTED: &[&str] = &[
    "failsafeInboundHostPorts",
    "failsafeOutboundHostPorts",
    "nftablesMarkMask",
    "iptablesMarkMask",
    "logPrefix",
    "disableConntrackInvalidCheck",
    "interfacePrefix",
];

/// Action settings: accepted; only the value hostpolicyd always uses is meaningful.
const ALLOW_ACTIONS: &[&str] = &[
    "nftablesFilterAllowAction",
    "nftablesMangleAllowAction",
    "iptablesFilterAllowAction",
    "iptablesMangleAllowAction",
];
const DENY_ACTIONS: &[&str] = &["nftablesFilterDenyAction", "iptablesFilterDenyAction"];

/// Felix settings that make sense in a Calico cluster but not here: accepted, with a warning.
const NO_EFFECT: &[&str] = &[
    "logSeverityScreen",
    "logSeverityFile",
    "logSeveritySys",
    "logFilePath",
    "logDebugFilenameRegex",
    "logActionRateLimit",
    "logActionRateLimitBurst",
    "reportingInterval",
    "reportingTTL",
    "usageReportingEnabled",
    "bpfEnabled",
    "bpfLogLevel",
    "bpfDataIfacePattern",
    "bpfExternalServiceMode",
    "bpfKubeProxyIptablesCleanupEnabled",
    "ipipEnabled",
    "ipipMTU",
    "vxlanEnabled",
    "vxlanMTU",
    "vxlanMTUV6",
    "vxlanPort",
    "vxlanVNI",
    "wireguardEnabled",
    "wireguardEnabledV6",
    "wireguardInterfaceName",
    "wireguardListeningPort",
    "nftablesMode",
    "nftablesRefreshInterval",
    "iptablesBackend",
    "iptablesRefreshInterval",
    "iptablesLockTimeout",
    "iptablesPostWriteCheckInterval",
    "chainInsertMode",
    "ipsetsRefreshInterval",
    "interfaceRefreshInterval",
    "routeRefreshInterval",
    "routeTableRange",
    "removeExternalRoutes",
    "healthEnabled",
    "healthHost",
    "healthPort",
    "prometheusMetricsEnabled",
    "prometheusMetricsHost",
    "prometheusMetricsPort",
    "prometheusGoMetricsEnabled",
    "prometheusProcessMetricsEnabled",
    "defaultEndpointToHostAction",
    "featureDetectOverride",
    "featureGates",
    "ipv6Support",
    "netlinkTimeout",
    "endpointReportingEnabled",
    "xdpEnabled",
    "xdpRefreshInterval",
    "genericXDPEnabled",
    "natPortRange",
    "natOutgoingAddress",
    "serviceLoopPrevention",
    "awsSrcDstCheck",
    "floatingIPs",
    "allowIPIPPacketsFromWorkloads",
    "allowVXLANPacketsFromWorkloads",
    // The other fields of Calico's FelixConfigurationSpec (api/pkg/apis/projectcalico/v3/felixconfig.go,
    // 3.32 and later): valid in Calico, about what hostpolicyd does not do (issue 20 item 9).
    "useInternalDataplaneDriver",
    "dataplaneDriver",
    "dataplaneWatchdogTimeout",
    "iptablesLockProbeInterval",
    "maxIpsetSize",
    "metadataAddr",
    "metadataPort",
    "openstackRegion",
    "interfaceExclude",
    "endpointReportingDelay",
    "endpointStatusPathPrefix",
    "healthTimeoutOverrides",
    "prometheusWireGuardMetricsEnabled",
    "prometheusMetricsCAFile",
    "prometheusMetricsCertFile",
    "prometheusMetricsKeyFile",
    "prometheusMetricsClientAuth",
    "kubeNodePortRanges",
    "policySyncPathPrefix",
    "usageReportingInitialDelay",
    "usageReportingInterval",
    "natOutgoingExclusions",
    "deviceRouteSourceAddress",
    "deviceRouteSourceAddressIPv6",
    "deviceRouteProtocol",
    "programClusterRoutes",
    "ipForwarding",
    "externalNodesList",
    "debugMemoryProfilePath",
    "debugDisableLogDropping",
    "debugSimulateCalcGraphHangAfter",
    "debugSimulateDataplaneHangAfter",
    "debugSimulateDataplaneApplyDelay",
    "debugHost",
    "debugPort",
    "iptablesNATOutgoingInterfaceFilter",
    "sidecarAccelerationEnabled",
    "nftablesFlowTableOffload",
    "nftablesFlowTableDataIfacePattern",
    "bpfOverlayHostSourceIP",
    "bpfDisableUnprivileged",
    "bpfJITHardening",
    "bpfConntrackLogLevel",
    "bpfConntrackMode",
    "bpfConntrackTimeouts",
    "bpfIPFragTimeout",
    "bpfLogFilters",
    "bpfCTLBLogFilter",
    "bpfL3IfacePattern",
    "bpfConnectTimeLoadBalancingEnabled",
    "bpfConnectTimeLoadBalancing",
    "bpfHostNetworkedNATWithoutCTLB",
    "bpfDSROptoutCIDRs",
    "bpfExtToServiceConnmark",
    "bpfKubeProxyMinSyncPeriod",
    "bpfKubeProxyHealthzPort",
    "bpfPSNATPorts",
    "bpfMapSizeNATFrontend",
    "bpfMapSizeNATBackend",
    "bpfMapSizeNATAffinity",
    "bpfMapSizeRoute",
    "bpfMapSizeConntrack",
    "bpfMapSizePerCpuConntrack",
    "bpfMapSizeConntrackScaling",
    "bpfMapSizeConntrackCleanupQueue",
    "bpfMapSizeIPSets",
    "bpfMapSizeIfState",
    "bpfHostConntrackBypass",
    "bpfIPFragmentReassemblyEnabled",
    "bpfEnforceRPF",
    "bpfPolicyDebugEnabled",
    "bpfForceTrackPacketsFromIfaces",
    "bpfDisableGROForIfaces",
    "bpfExcludeCIDRsFromNAT",
    "bpfExportBufferSizeMB",
    "istioAmbientMode",
    "istioDSCPMark",
    "cgroupV2Path",
    "flowLogsPolicyEvaluationMode",
    "bpfRedirectToPeer",
    "bpfAttachType",
    "flowLogsFlushInterval",
    "flowLogsCollectorDebugTrace",
    "flowLogsGoldmaneServer",
    "flowLogsLocalReporter",
    "bpfProfiling",
    "routeSource",
    "routeTableRanges",
    "routeSyncDisabled",
    "ipv4NormalRoutePriority",
    "ipv4ElevatedRoutePriority",
    "ipv6NormalRoutePriority",
    "ipv6ElevatedRoutePriority",
    "liveMigrationRouteConvergenceTime",
    "wireguardThreadingEnabled",
    "wireguardListeningPortV6",
    "wireguardRoutingRulePriority",
    "wireguardInterfaceNameV6",
    "wireguardMTU",
    "wireguardMTUV6",
    "wireguardHostEncryptionEnabled",
    "wireguardKeepAlive",
    "workloadSourceSpoofing",
    "mtuIfacePattern",
    "localSubnetL2Reachability",
    "localSubnetL2ReachabilityRefreshInterval",
    "windowsManageFirewallRules",
    "goGCThreshold",
    "goMemoryLimitMB",
    "goMaxProcs",
    "requireMTUFile",
    "bpfMaglevMaxEndpointsPerService",
    "bpfMaglevMaxServices",
];

pub(crate) fn felix_configuration(
    cx: &mut Cx,
    resource: &Node,
    meta: Meta,
    spec: Option<&Node>,
) -> FelixConfiguration {
    let name = meta.name.value;
    let read = name == "default" || name.starts_with("node.");
    // Calico 3.32's selector-scoped configuration: `nodeSelector` on a resource of another name. Calico
    // refuses it on `default` and `node.*` (a CEL rule of the CRD); elsewhere hostpolicyd accepts it
    // with one warning, at the field, as it does for a resource of another name (issue 20 item 9).
    let node_selector = match &spec.map(|s| &s.value) {
        Some(Value::Map(entries)) => entries.iter().find(|(k, _)| k.text == "nodeSelector"),
        _ => None,
    };
    match node_selector {
        Some((key, _)) if read => {
            let pos = cx.key_pos(key);
            cx.error_at(
                pos,
                format!("`nodeSelector` must not be set on FelixConfiguration `{name}` (Calico refuses it on `default` and `node.*`): remove it, or give the resource another name (selector-scoped configuration, which hostpolicyd does not support)"),
            );
        }
        Some((key, _)) => {
            let pos = cx.key_pos(key);
            cx.warn_at(
                pos,
                format!("FelixConfiguration `{name}` has no effect: selector-scoped configuration (`nodeSelector`, Calico 3.32) is not supported; only `default` and `node.<nodename>` are read"),
            );
        }
        None if !read => {
            let pos = meta.name.pos.clone();
            cx.warn_at(
                pos,
                format!("FelixConfiguration `{name}` has no effect: only `default` and `node.<nodename>` are read"),
            );
        }
        None => {}
    }
    let mut out = FelixConfiguration {
        name,
        pos: cx.pos(resource),
        ..Default::default()
    };
    let Some(spec) = spec else { return out };
    let entries = match &spec.value {
        Value::Map(entries) => entries,
        Value::Null => return out,
        _ => {
            object(cx, spec, "a FelixConfiguration spec", &[]);
            return out;
        }
    };
    let mut masks = Vec::new();
    for (key, value) in entries {
        let field = key.as_str();
        if value.value == Value::Invalid {
            cx.already_reported();
            continue;
        }
        match field {
            "failsafeInboundHostPorts" => {
                out.failsafe_inbound_host_ports = failsafe_list(cx, key, value)
            }
            "failsafeOutboundHostPorts" => {
                out.failsafe_outbound_host_ports = failsafe_list(cx, key, value)
            }
            "nftablesMarkMask" | "iptablesMarkMask" => {
                if let Some(mask) = mark_mask(cx, value, field) {
                    masks.push((field, value, mask));
                }
            }
            "logPrefix" => {
                out.log_prefix = string(cx, value, field).and_then(|p| log_prefix(cx, value, p))
            }
            "disableConntrackInvalidCheck" => {
                out.disable_conntrack_invalid_check = boolean(cx, value, field)
            }
            "interfacePrefix" => out.interface_prefixes = interface_prefixes(cx, value),
            // Reported above; only its type is checked here.
            "nodeSelector" => {
                string(cx, value, field);
            }
            _ if ALLOW_ACTIONS.contains(&field) => {
                action(cx, value, field, "Accept", "Return", "accepts")
            }
            _ if DENY_ACTIONS.contains(&field) => out.deny_action = deny_action(cx, value, field),
            _ if NO_EFFECT.contains(&field) => {
                let pos = cx.key_pos(key);
                cx.warn_at(pos, format!("`{field}` has no effect in hostpolicyd"));
            }
            _ => {
                let known: Vec<&str> = IMPLEMENTED
                    .iter()
                    .chain(ALLOW_ACTIONS)
                    .chain(DENY_ACTIONS)
                    .copied()
                    .collect();
                let mut message = unknown_field(field, "a FelixConfiguration spec", &known);
                message.push_str(" (other Felix settings have no effect here)");
                let pos = cx.key_pos(key);
                cx.error_at(pos, message);
            }
        }
    }
    out.mark_mask = choose_mask(cx, &masks);
    out
}

/// `failsafe*HostPorts`: a list of `{protocol, port, net}`; `[]` disables the list (spec §4.2).
fn failsafe_list(cx: &mut Cx, key: &Key, node: &Node) -> Option<Vec<ProtoPort>> {
    let field = key.as_str();
    match &node.value {
        Value::Null => {
            let pos = cx.key_pos(key);
            cx.warn_at(pos, format!("`{field}` is empty (null), which keeps the default list: write `{field}: []` to disable it"));
            return None;
        }
        Value::Str(s) => {
            let hint = if s.trim().eq_ignore_ascii_case("none") {
                format!("write `{field}: []` to disable the list (`none` only works in Felix's environment variables)")
            } else {
                format!("write a list such as `{field}: [{{protocol: TCP, port: 22}}]` (the `tcp:22` form only works in Felix's environment variables)")
            };
            cx.error(
                node,
                format!("`{field}` must be a list of {{protocol, port, net}}: {hint}"),
            );
            return None;
        }
        _ => {}
    }
    let items = list(cx, node, field)?;
    let entries: Vec<(&Node, ProtoPort)> = items
        .iter()
        .filter_map(|item| Some((item, failsafe_entry(cx, item)?)))
        .collect();
    one_family_catch_alls(cx, &entries);
    Some(entries.into_iter().map(|(_, e)| e).collect())
}

/// `net: 0.0.0.0/0` (or `::/0`): Calico's docs say it is processed like an entry without `net`, but
/// Felix renders a failsafe entry with a `net` only in the family of that net
/// (felix/rules/static.go, `failsafeInChain`/`failsafeOutChain`: `if protoPort.Net != ""` ... `if
/// int(ipVersion) == ip.Version()`, else the rule is skipped), and hostpolicyd does the same. A warning
/// unless the list also opens the port to the other family (issue 20 item 10).
fn one_family_catch_alls(cx: &mut Cx, entries: &[(&Node, ProtoPort)]) {
    for (item, e) in entries {
        let Some(net) = e.net.filter(|n| n.prefix_len() == 0) else {
            continue;
        };
        let other_covered = entries.iter().any(|(_, o)| {
            o.protocol == e.protocol
                && o.port == e.port
                && o.net.is_none_or(|n| {
                    n.prefix_len() == 0 && n.addr().is_ipv4() != net.addr().is_ipv4()
                })
        });
        if other_covered {
            continue;
        }
        let (this, other, other_net) = if net.addr().is_ipv4() {
            ("IPv4", "IPv6", "::/0")
        } else {
            ("IPv6", "IPv4", "0.0.0.0/0")
        };
        let proto = match e.protocol {
            proto::UDP => "UDP",
            proto::SCTP => "SCTP",
            _ => "TCP",
        };
        let at = match &item.value {
            Value::Map(fields) => fields
                .iter()
                .find(|(k, _)| k.text == "net")
                .map_or(*item, |(_, v)| v),
            _ => *item,
        };
        cx.warn(
            at,
            format!("`net: {net}` opens {proto} port {} for {this} only, as in Felix, which applies a failsafe entry with a `net` to that net's family alone (Calico's docs say it equals no `net`): to open it for {other} too, leave `net` out or add `{{protocol: {proto}, port: {}, net: \"{other_net}\"}}`", e.port, e.port),
        );
    }
}

fn failsafe_entry(cx: &mut Cx, node: &Node) -> Option<ProtoPort> {
    let obj = object(cx, node, "a failsafe entry", &["protocol", "port", "net"])?;
    let protocol = match obj.get("protocol") {
        Some(p) => failsafe_protocol(cx, p),
        None => {
            cx.error(
                node,
                "a failsafe entry needs a `protocol`: TCP, UDP or SCTP",
            );
            None
        }
    };
    let port = match obj.get("port") {
        Some(p) => integer(cx, p, "port", 0, 65535).and_then(|p| u16::try_from(p).ok()),
        None => {
            cx.error(node, "a failsafe entry needs a `port` (0-65535)");
            None
        }
    };
    let net = match obj.get("net") {
        Some(n) if matches!(&n.value, Value::Str(s) if s.is_empty()) => None,
        Some(n) => Some(failsafe_net(cx, n)?),
        None => None,
    };
    Some(ProtoPort {
        protocol: protocol?,
        port: port?,
        net,
    })
}

/// A failsafe entry's `net`: a CIDR (host bits masked with a warning, as for rule nets) or a bare
/// address, which Felix reads with `ParseCIDROrIP` as a /32 or /128.
fn failsafe_net(cx: &mut Cx, node: &Node) -> Option<ipnet::IpNet> {
    if let Value::Str(s) = &node.value {
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            return Some(ipnet::IpNet::from(ip));
        }
    }
    rule_net(cx, node, "net")
}

/// Uppercase `TCP`, `UDP` or `SCTP`: Calico's API validator accepts nothing else
/// (libcalico-go/lib/validator/v3/validator.go, `validateProtoPort`), although its FelixConfiguration
/// reference lists `tcp, udp, sctp`; lowercase is the form of Felix's environment variables.
fn failsafe_protocol(cx: &mut Cx, node: &Node) -> Option<u8> {
    let text = string(cx, node, "protocol")?;
    let found = [
        ("TCP", proto::TCP),
        ("UDP", proto::UDP),
        ("SCTP", proto::SCTP),
    ]
    .into_iter()
    .find(|(name, _)| name.eq_ignore_ascii_case(text));
    match found {
        Some((name, p)) if name == text => Some(p),
        Some((name, _)) => {
            cx.error(
                node,
                format!("failsafe protocols are uppercase: write `protocol: {name}`, not `{text}` (Calico's API validator accepts only `TCP`, `UDP` and `SCTP` in a FelixConfiguration, although its FelixConfiguration reference lists them in lowercase)"),
            );
            None
        }
        None => {
            cx.error(
                node,
                format!("failsafe protocol `{text}` is not valid: use TCP, UDP or SCTP"),
            );
            None
        }
    }
}

/// kube-proxy's mark bits: hostpolicyd's mark bits must stay clear of them.
const KUBE_PROXY_BITS: u32 = 0x4000 | 0x8000;

fn mark_mask(cx: &mut Cx, node: &Node, field: &str) -> Option<u32> {
    let mask = u32::try_from(integer(cx, node, field, 0, i128::from(u32::MAX))?).ok()?;
    let usable = (mask & !KUBE_PROXY_BITS).count_ones();
    if usable < 2 {
        cx.error(
            node,
            format!("`{field}: {mask:#x}` leaves {usable} usable bit(s) outside kube-proxy's 0x4000 and 0x8000; hostpolicyd needs at least 2 (the default is 0xffff0000)"),
        );
        return None;
    }
    Some(mask)
}

/// nftablesMarkMask wins over iptablesMarkMask (hostpolicyd is an nftables program).
fn choose_mask(cx: &mut Cx, masks: &[(&str, &Node, u32)]) -> Option<u32> {
    let nft = masks.iter().find(|(f, _, _)| *f == "nftablesMarkMask");
    let ipt = masks.iter().find(|(f, _, _)| *f == "iptablesMarkMask");
    match (nft, ipt) {
        (Some(n), Some(i)) => {
            if n.2 != i.2 {
                cx.warn(
                    i.1,
                    format!(
                        "`iptablesMarkMask` is ignored: `nftablesMarkMask` ({:#x}) is used",
                        n.2
                    ),
                );
            }
            Some(n.2)
        }
        (Some(m), None) | (None, Some(m)) => Some(m.2),
        (None, None) => None,
    }
}

/// Felix's rule for `logPrefix`: `[a-zA-Z0-9%: /_-]*`; the kernel keeps 127 bytes.
fn log_prefix(cx: &mut Cx, node: &Node, prefix: &str) -> Option<String> {
    let ok = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"%: /_-".contains(&b));
    if !ok {
        cx.error(
            node,
            format!("`logPrefix` `{prefix}` may only contain `A-Z a-z 0-9 % : / _ -` and spaces"),
        );
        return None;
    }
    if prefix.len() > 127 {
        cx.error(
            node,
            "`logPrefix` is longer than 127 characters (the kernel's limit)",
        );
        return None;
    }
    Some(prefix.to_owned())
}

/// `interfacePrefix: cali,tap`: comma-separated prefixes of workload interfaces.
fn interface_prefixes(cx: &mut Cx, node: &Node) -> Option<Vec<String>> {
    let text = string(cx, node, "interfacePrefix")?;
    let prefixes: Vec<String> = text.split(',').map(|p| p.trim().to_owned()).collect();
    let bad = prefixes.iter().find(|p| {
        p.is_empty()
            || p.len() > 15
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    });
    if let Some(bad) = bad {
        cx.error(
            node,
            format!("`interfacePrefix` entry `{bad}` is not valid: comma-separated interface name prefixes such as `cali,tap`"),
        );
        return None;
    }
    Some(prefixes)
}

/// `nftablesFilterDenyAction` / `iptablesFilterDenyAction`: `Drop` or `Reject`.
fn deny_action(cx: &mut Cx, node: &Node, field: &str) -> Option<DenyAction> {
    match string(cx, node, field)? {
        "Drop" => Some(DenyAction::Drop),
        "Reject" => Some(DenyAction::Reject),
        value => {
            cx.error(
                node,
                format!("`{field}` must be Drop or Reject, not `{value}`"),
            );
            None
        }
    }
}

/// An `*AllowAction` setting: hostpolicyd always uses `used`.
fn action(cx: &mut Cx, node: &Node, field: &str, used: &str, other: &str, verb: &str) {
    let Some(value) = string(cx, node, field) else {
        return;
    };
    if value == used {
        cx.warn(
            node,
            format!("`{field}` has no effect in hostpolicyd (it always {verb}: {used})"),
        );
    } else if value == other {
        cx.warn(
            node,
            format!("`{field}: {other}` is not supported: hostpolicyd uses {used}"),
        );
    } else {
        cx.error(
            node,
            format!("`{field}` must be {used} or {other}, not `{value}`"),
        );
    }
}
