//! Naming the object of a message the kernel rejected: which rule (and expression), set, element, map
//! or chain of the ruleset, from the batch's map of sequence numbers to IR objects and the extended
//! ACK's offset.

use std::fmt::Write as _;

use super::batch::{EncodedBatch, Obj};
use super::elems::kernel_elems;
use super::{clean_comment, HASH_CHAIN};
use crate::netlink::{self as nl, Reply};
use crate::ruleset::{Ruleset, SetElement, SetType};

/// Names the object of a rejected message of an apply batch.
pub(crate) fn describe(rs: &Ruleset, batch: &EncodedBatch, seq: u32, reply: &Reply) -> String {
    let Some(obj) = batch.objs.get(seq as usize) else {
        return format!("kernel rejected message {seq}");
    };
    let msg = batch.message(seq);
    match *obj {
        Obj::BatchBegin | Obj::BatchEnd => {
            format!(
                "kernel rejected the transaction for table inet {}",
                rs.table
            )
        }
        Obj::TableEnsure => format!("kernel rejected adding table inet {}", rs.table),
        Obj::TableDelete => format!("kernel rejected deleting the old table inet {}", rs.table),
        Obj::TableCreate => format!("kernel rejected creating table inet {}", rs.table),
        Obj::Chain(i) => format!("kernel rejected chain {}", rs.chains[i].name),
        Obj::Set(i) => format!("kernel rejected set {}", rs.sets[i].name),
        Obj::Map(i) => format!("kernel rejected map {}", rs.maps[i].name),
        Obj::SetElems { set, first } => {
            let s = &rs.sets[set];
            match msg
                .zip(reply.offset)
                .and_then(|(m, off)| list_index(&m, off))
            {
                Some(k) => {
                    let mut found = None;
                    let mut n = 0;
                    kernel_elems(s).for_each(|e| {
                        if n == first + k {
                            found = Some(e);
                        }
                        n += 1;
                    });
                    match found {
                        Some(e) => format!(
                            "kernel rejected element {} ({}{}) of set {}",
                            e.ir,
                            element_text(&s.elements[e.ir]),
                            if e.end { ", its end" } else { "" },
                            s.name
                        ),
                        None => format!("kernel rejected an element of set {}", s.name),
                    }
                }
                None => format!("kernel rejected elements of set {}", s.name),
            }
        }
        Obj::MapElems { map, first } => {
            let m = &rs.maps[map];
            match msg
                .zip(reply.offset)
                .and_then(|(mm, off)| list_index(&mm, off))
            {
                Some(k) if first + k < m.elements.len() => format!(
                    "kernel rejected element {} ({:?}) of map {}",
                    first + k,
                    m.elements[first + k].0,
                    m.name
                ),
                _ => format!("kernel rejected elements of map {}", m.name),
            }
        }
        Obj::HashChain => format!(
            "kernel rejected creating chain {HASH_CHAIN} (the content hash) of table inet {}",
            rs.table
        ),
        Obj::DelElems { .. } | Obj::AddElems { .. } => format!("kernel rejected message {seq}"),
        Obj::Rule { chain, rule } => {
            let c = &rs.chains[chain];
            let r = &c.rules[rule];
            let mut s = format!("kernel rejected rule {rule} of chain {}", c.name);
            if let Some(comment) = &r.comment {
                let _ = write!(s, " (comment {:?})", clean_comment(comment));
            }
            if let Some((k, name)) = msg.zip(reply.offset).and_then(|(m, off)| expr_at(&m, off)) {
                let _ = write!(s, ", expression {k} ({name})");
            }
            s
        }
    }
}

pub(crate) fn set_type_name(t: SetType) -> &'static str {
    match t {
        SetType::Ipv4Addr | SetType::Ipv4Hosts => "ipv4_addr",
        SetType::Ipv6Addr | SetType::Ipv6Hosts => "ipv6_addr",
        SetType::InetService => "inet_service",
    }
}

pub(crate) fn element_text(e: &SetElement) -> String {
    match e {
        SetElement::V4(n) => n.to_string(),
        SetElement::V6(n) => n.to_string(),
        SetElement::Ports(a, b) if a == b => a.to_string(),
        SetElement::Ports(a, b) => format!("{a}-{b}"),
    }
}

/// The index of the element of a NEWSETELEM message's list that contains byte `offset` of the message.
pub(crate) fn list_index(msg: &nl::Msg<'_>, offset: u32) -> Option<usize> {
    let list = nl::msg_attrs(msg).find(|a| a.ty == nl::NFTA_SET_ELEM_LIST_ELEMENTS)?;
    let base = list.offset + nl::NLA_HDRLEN;
    nl::attrs(list.payload, base)
        .position(|e| (e.offset..e.offset + e.len).contains(&(offset as usize)))
}

/// The index and name of the rule expression that contains byte `offset` of the message.
pub(crate) fn expr_at(msg: &nl::Msg<'_>, offset: u32) -> Option<(usize, String)> {
    let list = nl::msg_attrs(msg).find(|a| a.ty == nl::NFTA_RULE_EXPRESSIONS)?;
    let base = list.offset + nl::NLA_HDRLEN;
    nl::attrs(list.payload, base)
        .enumerate()
        .find_map(|(k, e)| {
            if !(e.offset..e.offset + e.len).contains(&(offset as usize)) {
                return None;
            }
            let name = nl::attrs(e.payload, 0)
                .find(|a| a.ty == nl::NFTA_EXPR_NAME)
                .map(|a| nl::attr_str(a.payload))
                .unwrap_or_default();
            Some((k, name))
        })
}
