//! Every netlink number the crate uses, once: `linux/netlink.h`, `linux/netfilter/nfnetlink.h`,
//! `linux/netfilter/nf_tables.h`, `linux/rtnetlink.h`, and libnftnl's userdata TLVs. No other file
//! defines an `NLM_F_*`, `NLMSG_*`, `NFNL_*`, `NFT_MSG_*` or `NFTA_*` constant (`layout_check.py`).

// --- linux/netlink.h: framing
pub const NLMSG_HDRLEN: usize = 16;
pub const NLA_HDRLEN: usize = 4;
pub const NLA_F_NESTED: u16 = 1 << 15;
pub const NLA_TYPE_MASK: u16 = !(3 << 14);

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// `NLM_F_ROOT | NLM_F_MATCH`.
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
/// NEWRULE: after the rule of `NFTA_RULE_POSITION` (without one: at the chain's end); without the flag,
/// before it (at the chain's start).
pub const NLM_F_APPEND: u16 = 0x800;
/// In an NLMSG_ERROR: the error message is capped to the header of the failing message.
pub const NLM_F_CAPPED: u16 = 0x100;
/// In an NLMSG_ERROR: extended-ACK TLVs follow.
pub const NLM_F_ACK_TLVS: u16 = 0x200;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
pub const NLMSGERR_ATTR_MSG: u16 = 1;
pub const NLMSGERR_ATTR_OFFS: u16 = 2;

/// Socket options of level SOL_NETLINK.
pub const SOL_NETLINK: i32 = 270;
pub const NETLINK_CAP_ACK: i32 = 10;
pub const NETLINK_EXT_ACK: i32 = 11;

// --- linux/netfilter/nfnetlink.h
pub const NFGENMSG_LEN: usize = 4;
pub const NFNETLINK_V0: u8 = 0;
pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub const NFNL_SUBSYS_ULOG: u16 = 4;
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub const NFNL_MSG_BATCH_END: u16 = 17;
/// Multicast groups (`enum nfnetlink_groups`): a socket joins group G by binding with bit `G - 1`.
pub const NFNLGRP_CONNTRACK_NEW: u32 = 1;
pub const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
pub const NFNLGRP_NFTABLES: u32 = 7;

pub const NFPROTO_UNSPEC: u8 = 0;
pub const NFPROTO_INET: u8 = 1;

// --- linux/netfilter/nf_tables.h: messages
pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_GETTABLE: u16 = 1;
pub const NFT_MSG_DELTABLE: u16 = 2;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_GETRULE: u16 = 7;
pub const NFT_MSG_DELRULE: u16 = 8;
pub const NFT_MSG_NEWSET: u16 = 9;
pub const NFT_MSG_GETSET: u16 = 10;
pub const NFT_MSG_DELSET: u16 = 11;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_GETSETELEM: u16 = 13;
pub const NFT_MSG_DELSETELEM: u16 = 14;
pub const NFT_MSG_NEWGEN: u16 = 15;
pub const NFT_MSG_NEWOBJ: u16 = 18;
pub const NFT_MSG_DELOBJ: u16 = 20;
pub const NFT_MSG_NEWFLOWTABLE: u16 = 22;
pub const NFT_MSG_DELFLOWTABLE: u16 = 24;

// --- tables
pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFTA_TABLE_FLAGS: u16 = 2;
pub const NFTA_TABLE_HANDLE: u16 = 4;
pub const NFTA_TABLE_USERDATA: u16 = 6;

// --- chains and hooks
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_HANDLE: u16 = 2;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_CHAIN_HOOK: u16 = 4;
pub const NFTA_CHAIN_POLICY: u16 = 5;
pub const NFTA_CHAIN_USE: u16 = 6;
pub const NFTA_CHAIN_TYPE: u16 = 7;
pub const NFTA_CHAIN_COUNTERS: u16 = 8;
pub const NFTA_CHAIN_PAD: u16 = 9;
pub const NFTA_CHAIN_FLAGS: u16 = 10;
pub const NFTA_CHAIN_ID: u16 = 11;
pub const NFTA_CHAIN_USERDATA: u16 = 12;
pub const NFTA_HOOK_HOOKNUM: u16 = 1;
pub const NFTA_HOOK_PRIORITY: u16 = 2;
pub const NFTA_HOOK_DEV: u16 = 3;
pub const NFTA_HOOK_DEVS: u16 = 4;
/// `NFT_CHAIN_BASE`, reported in a base chain's flags.
pub const NFT_CHAIN_BASE: u32 = 0x1;

// --- rules and expressions
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_HANDLE: u16 = 3;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
/// The handle of the rule before it (dumps carry it).
pub const NFTA_RULE_POSITION: u16 = 6;
pub const NFTA_RULE_USERDATA: u16 = 7;
pub const NFTA_RULE_PAD: u16 = 8;
pub const NFTA_LIST_ELEM: u16 = 1;
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;
pub const NFTA_LOOKUP_SET: u16 = 1;
pub const NFTA_LOOKUP_SREG: u16 = 2;
pub const NFTA_LOOKUP_DREG: u16 = 3;
pub const NFTA_LOOKUP_SET_ID: u16 = 4;
pub const NFTA_LOOKUP_FLAGS: u16 = 5;
pub const NFT_LOOKUP_F_INV: u32 = 1;
pub const NFTA_IMMEDIATE_DATA: u16 = 2;
/// `NFTA_LOG_GROUP` is a be16 (the uapi comment says u32; the kernel's policy is NLA_U16).
pub const NFTA_LOG_GROUP: u16 = 1;
pub const NFTA_LOG_PREFIX: u16 = 2;
pub const NFTA_LOG_LEVEL: u16 = 5;
pub const NFTA_CT_DREG: u16 = 1;
pub const NFTA_CT_KEY: u16 = 2;
pub const NFT_CT_STATUS: u32 = 2;
/// `limit`: rate and unit (seconds) are be64, burst, type and flags be32.
pub const NFTA_LIMIT_RATE: u16 = 1;
pub const NFTA_LIMIT_UNIT: u16 = 2;
pub const NFTA_LIMIT_BURST: u16 = 3;
pub const NFTA_LIMIT_TYPE: u16 = 4;
pub const NFTA_LIMIT_FLAGS: u16 = 5;
pub const NFT_LIMIT_PKTS: u32 = 0;
pub const NFTA_RANGE_SREG: u16 = 1;
pub const NFTA_RANGE_OP: u16 = 2;
pub const NFTA_RANGE_FROM_DATA: u16 = 3;
pub const NFTA_RANGE_TO_DATA: u16 = 4;
pub const NFT_RANGE_EQ: u32 = 0;
pub const NFT_RANGE_NEQ: u32 = 1;
pub const NFT_REG_1: u32 = 1;
pub const NFTA_COUNTER_BYTES: u16 = 1;
pub const NFTA_COUNTER_PACKETS: u16 = 2;

// --- sets and elements
pub const NFTA_SET_TABLE: u16 = 1;
pub const NFTA_SET_NAME: u16 = 2;
pub const NFTA_SET_FLAGS: u16 = 3;
pub const NFTA_SET_KEY_TYPE: u16 = 4;
pub const NFTA_SET_KEY_LEN: u16 = 5;
pub const NFTA_SET_DATA_TYPE: u16 = 6;
pub const NFTA_SET_DATA_LEN: u16 = 7;
pub const NFTA_SET_ID: u16 = 10;
pub const NFTA_SET_USERDATA: u16 = 13;
pub const NFTA_SET_PAD: u16 = 14;
pub const NFTA_SET_HANDLE: u16 = 16;
/// The number of elements (recent kernels report it).
pub const NFTA_SET_COUNT: u16 = 20;
/// A set bound to one rule (`{ 80, 443 }` written inline).
pub const NFT_SET_ANONYMOUS: u32 = 0x1;
pub const NFT_SET_INTERVAL: u32 = 0x4;
pub const NFT_SET_MAP: u32 = 0x8;

pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_SET_ELEM_DATA: u16 = 2;
pub const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
pub const NFTA_SET_ELEM_USERDATA: u16 = 6;
pub const NFTA_SET_ELEM_EXPR: u16 = 7;
pub const NFTA_SET_ELEM_EXPRESSIONS: u16 = 10;
pub const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

// --- data and verdicts
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_DATA_VERDICT: u16 = 2;
pub const NFTA_VERDICT_CODE: u16 = 1;
pub const NFTA_VERDICT_CHAIN: u16 = 2;
pub const NFT_JUMP: i32 = -3;
pub const NFT_GOTO: i32 = -4;
pub const NFT_RETURN: i32 = -5;
pub const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
pub const NF_DROP: u32 = 0;
pub const NF_ACCEPT: u32 = 1;

// --- generations (NEWGEN notifications)
pub const NFTA_GEN_ID: u16 = 1;
pub const NFTA_GEN_PROC_PID: u16 = 2;
pub const NFTA_GEN_PROC_NAME: u16 = 3;

// --- libnftnl userdata TLVs (`libnftnl/udata.h`) and nft's byte orders
/// Table, chain and rule comments share type 0.
pub const NFTNL_UDATA_COMMENT: u8 = 0;
pub const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
pub const NFTNL_UDATA_SET_DATABYTEORDER: u8 = 1;
pub const NFTNL_UDATA_SET_ELEM_FLAGS: u8 = 1;
pub const NFTNL_SET_ELEM_F_INTERVAL_OPEN: u32 = 1;
pub const BYTEORDER_HOST_ENDIAN: u32 = 1;
pub const BYTEORDER_BIG_ENDIAN: u32 = 2;

// --- linux/netfilter/nfnetlink_log.h: NFLOG (NFNL_SUBSYS_ULOG)
pub const NFULNL_MSG_PACKET: u16 = 0;
pub const NFULNL_MSG_CONFIG: u16 = 1;
pub const NFULA_CFG_CMD: u16 = 1;
/// `struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 _pad; }` (6 bytes).
pub const NFULA_CFG_MODE: u16 = 2;
pub const NFULA_CFG_NLBUFSIZ: u16 = 3;
/// In 1/100 s.
pub const NFULA_CFG_TIMEOUT: u16 = 4;
pub const NFULA_CFG_QTHRESH: u16 = 5;
/// A be16.
pub const NFULA_CFG_FLAGS: u16 = 6;
pub const NFULNL_CFG_CMD_BIND: u8 = 1;
pub const NFULNL_CFG_CMD_UNBIND: u8 = 2;
pub const NFULNL_COPY_PACKET: u8 = 2;
/// A sequence number per instance in every message: gaps count what the kernel dropped.
pub const NFULNL_CFG_F_SEQ: u16 = 0x0001;
/// `struct nfulnl_msg_packet_hdr { __be16 hw_protocol; __u8 hook; __u8 _pad; }`.
pub const NFULA_PACKET_HDR: u16 = 1;
pub const NFULA_MARK: u16 = 2;
/// `struct nfulnl_msg_packet_timestamp { __be64 sec; __be64 usec; }` (hooks up to forward only).
pub const NFULA_TIMESTAMP: u16 = 3;
pub const NFULA_IFINDEX_INDEV: u16 = 4;
pub const NFULA_IFINDEX_OUTDEV: u16 = 5;
/// The packet from its network header, cut to the instance's copy range.
pub const NFULA_PAYLOAD: u16 = 9;
pub const NFULA_PREFIX: u16 = 10;
pub const NFULA_SEQ: u16 = 12;
/// Netfilter hooks (`enum nf_inet_hooks`), as NFULA_PACKET_HDR says where the packet was logged.
pub const NF_INET_PRE_ROUTING: u8 = 0;
pub const NF_INET_LOCAL_IN: u8 = 1;
pub const NF_INET_FORWARD: u8 = 2;
pub const NF_INET_LOCAL_OUT: u8 = 3;
pub const NF_INET_POST_ROUTING: u8 = 4;

// --- linux/netfilter/nfnetlink_conntrack.h: ctnetlink (NFNL_SUBSYS_CTNETLINK)
pub const IPCTNL_MSG_CT_NEW: u16 = 0;
pub const IPCTNL_MSG_CT_GET: u16 = 1;
pub const IPCTNL_MSG_CT_DELETE: u16 = 2;
pub const CTA_TUPLE_ORIG: u16 = 1;
pub const CTA_TUPLE_REPLY: u16 = 2;
pub const CTA_STATUS: u16 = 3;
pub const CTA_MARK: u16 = 8;
pub const CTA_COUNTERS_ORIG: u16 = 9;
pub const CTA_COUNTERS_REPLY: u16 = 10;
pub const CTA_ID: u16 = 12;
pub const CTA_ZONE: u16 = 18;
pub const CTA_TIMESTAMP: u16 = 20;
pub const CTA_TUPLE_IP: u16 = 1;
pub const CTA_TUPLE_PROTO: u16 = 2;
pub const CTA_IP_V4_SRC: u16 = 1;
pub const CTA_IP_V4_DST: u16 = 2;
pub const CTA_IP_V6_SRC: u16 = 3;
pub const CTA_IP_V6_DST: u16 = 4;
pub const CTA_PROTO_NUM: u16 = 1;
pub const CTA_PROTO_SRC_PORT: u16 = 2;
pub const CTA_PROTO_DST_PORT: u16 = 3;
pub const CTA_PROTO_ICMP_TYPE: u16 = 5;
pub const CTA_PROTO_ICMP_CODE: u16 = 6;
pub const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
pub const CTA_PROTO_ICMPV6_CODE: u16 = 9;
pub const CTA_COUNTERS_PACKETS: u16 = 1;
pub const CTA_COUNTERS_BYTES: u16 = 2;
pub const CTA_TIMESTAMP_START: u16 = 1;
pub const CTA_TIMESTAMP_STOP: u16 = 2;

// --- linux/rtnetlink.h
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_GETADDR: u16 = 22;
/// `struct ifinfomsg` and `struct ifaddrmsg`.
pub const IFINFOMSG_LEN: usize = 16;
pub const IFADDRMSG_LEN: usize = 8;
pub const IFLA_IFNAME: u16 = 3;
pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
/// Multicast groups as bind masks: RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR.
pub const RTMGRP_LINK: u32 = 0x1;
pub const RTMGRP_IPV4_IFADDR: u32 = 0x10;
pub const RTMGRP_IPV6_IFADDR: u32 = 0x100;
