//! A recording fake of the kernel for unit tests of everything above the dataplane (apply ordering,
//! rollback, "is our table still there"): it records every call, keeps one ruleset per table name, and
//! can be told to fail the next apply (leaving its state unchanged, as the kernel does). Like
//! [`super::Netlink`], it refuses a ruleset that [`super::netlink::validate`] refuses (errno `None`), and
//! reports the table comment as the kernel stores it ([`super::clean_comment`]).
//!
//! `update` takes the path the netlink dataplane would take (element changes when only set elements
//! differ and the fake holds `previous`, else a full replace) and records it in [`Call::Update`].

use std::collections::BTreeMap;

use super::delta::set_delta;
use super::netlink::validate;
use super::{clean_comment, Dataplane, DataplaneError, FullReason, UpdatePath};
use crate::ruleset::Ruleset;

/// One call made to the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Apply(Ruleset),
    /// `update(previous, next)`: `previous`'s comment, `next`, and the path taken (for a failed call,
    /// the path it would have taken).
    Update {
        previous: String,
        next: Ruleset,
        path: UpdatePath,
    },
    Flush(String),
    TableComment(String),
}

#[derive(Debug, Default)]
pub struct FakeDataplane {
    calls: Vec<Call>,
    tables: BTreeMap<String, Ruleset>,
    fail_next_apply: Option<DataplaneError>,
}

impl FakeDataplane {
    pub fn new() -> FakeDataplane {
        FakeDataplane::default()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> &[Call] {
        &self.calls
    }

    /// Forgets the recorded calls (the state stays).
    pub fn clear_calls(&mut self) {
        self.calls.clear();
    }

    /// The rulesets passed to `apply`, and as `next` to `update`, in order (failed ones included).
    pub fn applied(&self) -> Vec<&Ruleset> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Apply(r) | Call::Update { next: r, .. } => Some(r),
                _ => None,
            })
            .collect()
    }

    /// The path of the last `update` call, if any.
    pub fn last_update(&self) -> Option<&UpdatePath> {
        self.calls.iter().rev().find_map(|c| match c {
            Call::Update { path, .. } => Some(path),
            _ => None,
        })
    }

    /// What the "kernel" holds for `table`.
    pub fn table(&self, table: &str) -> Option<&Ruleset> {
        self.tables.get(table)
    }

    /// Puts a table in place behind the daemon's back (e.g. a leftover of an earlier run).
    pub fn insert_table(&mut self, ruleset: Ruleset) {
        self.tables.insert(ruleset.table.clone(), ruleset);
    }

    /// Removes a table behind the daemon's back (someone ran `nft delete table`).
    pub fn remove_table(&mut self, table: &str) -> Option<Ruleset> {
        self.tables.remove(table)
    }

    /// The next `apply` or `update` fails with `error` and changes nothing.
    pub fn fail_next_apply(&mut self, error: DataplaneError) {
        self.fail_next_apply = Some(error);
    }
}

impl Dataplane for FakeDataplane {
    fn apply(&mut self, ruleset: &Ruleset) -> Result<(), DataplaneError> {
        self.calls.push(Call::Apply(ruleset.clone()));
        if let Some(e) = self.fail_next_apply.take() {
            return Err(e);
        }
        validate(ruleset)?;
        self.tables.insert(ruleset.table.clone(), ruleset.clone());
        Ok(())
    }

    fn update(&mut self, previous: &Ruleset, next: &Ruleset) -> Result<(), DataplaneError> {
        let path = match set_delta(previous, next) {
            None => UpdatePath::Full(FullReason::NotOnlyElements),
            Some(_) if self.tables.get(&next.table) != Some(previous) => {
                UpdatePath::Full(FullReason::KernelDiffers)
            }
            Some(d) => UpdatePath::Elements {
                sets: d.set_names(next).len(),
                removed: d.removed(),
                added: d.added(),
            },
        };
        self.calls.push(Call::Update {
            previous: previous.comment.clone(),
            next: next.clone(),
            path,
        });
        if let Some(e) = self.fail_next_apply.take() {
            return Err(e);
        }
        validate(next)?;
        self.tables.insert(next.table.clone(), next.clone());
        Ok(())
    }

    fn flush(&mut self, table: &str) -> Result<(), DataplaneError> {
        self.calls.push(Call::Flush(table.to_string()));
        self.tables.remove(table);
        Ok(())
    }

    fn table_comment(&mut self, table: &str) -> Result<Option<String>, DataplaneError> {
        self.calls.push(Call::TableComment(table.to_string()));
        Ok(self
            .tables
            .get(table)
            .map(|r| clean_comment(&r.comment).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(table: &str, comment: &str) -> Ruleset {
        Ruleset {
            table: table.into(),
            comment: comment.into(),
            sets: vec![],
            maps: vec![],
            chains: vec![],
            origins: Default::default(),
        }
    }

    #[test]
    fn records_calls_and_keeps_state_per_table() {
        let mut dp = FakeDataplane::new();
        assert_eq!(dp.table_comment("hp"), Ok(None));
        dp.apply(&rs("hp", "gen 1")).unwrap();
        dp.apply(&rs("other", "x")).unwrap();
        assert_eq!(dp.table_comment("hp"), Ok(Some("gen 1".into())));
        dp.apply(&rs("hp", "gen 2")).unwrap();
        assert_eq!(dp.table("hp").unwrap().comment, "gen 2");
        dp.flush("hp").unwrap();
        dp.flush("missing").unwrap();
        assert_eq!(dp.table("hp"), None);
        assert_eq!(dp.table("other").unwrap().comment, "x");
        assert_eq!(
            dp.calls(),
            &[
                Call::TableComment("hp".into()),
                Call::Apply(rs("hp", "gen 1")),
                Call::Apply(rs("other", "x")),
                Call::TableComment("hp".into()),
                Call::Apply(rs("hp", "gen 2")),
                Call::Flush("hp".into()),
                Call::Flush("missing".into()),
            ]
        );
        assert_eq!(dp.applied().len(), 3);
        dp.clear_calls();
        assert!(dp.calls().is_empty());
    }

    #[test]
    fn a_failed_apply_changes_nothing() {
        let mut dp = FakeDataplane::new();
        dp.apply(&rs("hp", "good")).unwrap();
        let err = DataplaneError::os(
            "kernel rejected rule 0 of chain x: Invalid argument (os error 22)",
            22,
        );
        dp.fail_next_apply(err.clone());
        assert_eq!(dp.apply(&rs("hp", "bad")), Err(err));
        assert_eq!(dp.table("hp").unwrap().comment, "good");
        assert_eq!(
            dp.applied().last().unwrap().comment,
            "bad",
            "the failed call is recorded"
        );
        // only the next one fails
        dp.apply(&rs("hp", "better")).unwrap();
        assert_eq!(dp.table_comment("hp"), Ok(Some("better".into())));
    }

    #[test]
    fn tables_can_change_behind_the_daemons_back() {
        let mut dp = FakeDataplane::new();
        dp.insert_table(rs("hp", "leftover"));
        assert_eq!(dp.table_comment("hp"), Ok(Some("leftover".into())));
        assert!(dp.remove_table("hp").is_some());
        assert_eq!(dp.table_comment("hp"), Ok(None));
    }

    #[test]
    fn refuses_what_netlink_refuses() {
        let mut dp = FakeDataplane::new();
        dp.apply(&rs("hp", "good")).unwrap();
        let err = dp.apply(&rs("not a name", "x")).unwrap_err();
        assert_eq!(err.errno, None);
        assert!(err.message.contains("not an nft identifier"), "{err}");
        assert_eq!(dp.table("hp").unwrap().comment, "good");
        assert_eq!(dp.calls().len(), 2);
    }

    #[test]
    fn comments_as_the_kernel_keeps_them() {
        let mut dp = FakeDataplane::new();
        dp.apply(&rs("hp", &"x".repeat(300))).unwrap();
        assert_eq!(dp.table_comment("hp"), Ok(Some("x".repeat(128))));
    }

    #[test]
    fn update_records_the_path_netlink_would_take() {
        use crate::ruleset::{Set, SetElement, SetType};
        let set = |elements: Vec<SetElement>| Set {
            name: "s".into(),
            set_type: SetType::InetService,
            elements,
        };
        let mut a = rs("hp", "a");
        a.sets.push(set(vec![SetElement::Ports(22, 22)]));
        let mut b = rs("hp", "b");
        b.sets.push(set(vec![SetElement::Ports(80, 80)]));
        let mut dp = FakeDataplane::new();
        // Nothing in the "kernel" yet: full.
        dp.update(&a, &b).unwrap();
        assert_eq!(
            dp.last_update(),
            Some(&UpdatePath::Full(FullReason::KernelDiffers))
        );
        // It holds b: elements only.
        dp.update(&b, &a).unwrap();
        assert_eq!(
            dp.last_update(),
            Some(&UpdatePath::Elements {
                sets: 1,
                removed: 1,
                added: 1
            })
        );
        assert_eq!(dp.table("hp"), Some(&a));
        // A set renamed: full.
        let mut c = a.clone();
        c.sets[0].name = "t".into();
        dp.update(&a, &c).unwrap();
        assert_eq!(
            dp.last_update(),
            Some(&UpdatePath::Full(FullReason::NotOnlyElements))
        );
        assert_eq!(dp.applied().len(), 3);
        // A failing update changes nothing.
        dp.fail_next_apply(DataplaneError::os("no", 22));
        assert!(dp.update(&c, &a).is_err());
        assert_eq!(dp.table("hp"), Some(&c));
        assert_eq!(dp.table_comment("hp"), Ok(Some("a".into())));
    }

    #[test]
    fn the_default_update_is_apply() {
        struct Only(Vec<String>);
        impl Dataplane for Only {
            fn apply(&mut self, r: &Ruleset) -> Result<(), DataplaneError> {
                self.0.push(r.comment.clone());
                Ok(())
            }
            fn flush(&mut self, _: &str) -> Result<(), DataplaneError> {
                Ok(())
            }
            fn table_comment(&mut self, _: &str) -> Result<Option<String>, DataplaneError> {
                Ok(None)
            }
        }
        let mut d = Only(Vec::new());
        d.update(&rs("hp", "a"), &rs("hp", "b")).unwrap();
        assert_eq!(d.0, ["b"]);
    }

    #[test]
    fn usable_as_a_trait_object() {
        let mut dp = FakeDataplane::new();
        let d: &mut dyn Dataplane = &mut dp;
        d.apply(&rs("hp", "c")).unwrap();
        assert_eq!(dp.calls().len(), 1);
    }
}
