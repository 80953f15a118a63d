//! A recording fake of the kernel for unit tests of everything above the dataplane (apply ordering,
//! rollback, "is our table still there"): it records every call, keeps one ruleset per table name, and
//! can be told to fail the next apply (leaving its state unchanged, as the kernel does). Like
//! [`super::Netlink`], it refuses a ruleset that [`super::netlink::validate`] refuses (errno `None`), and
//! reports the table comment as the kernel stores it ([`super::clean_comment`]).

use std::collections::BTreeMap;

use super::netlink::validate;
use super::{clean_comment, Dataplane, DataplaneError};
use crate::ruleset::Ruleset;

/// One call made to the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Apply(Ruleset),
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

    /// The rulesets passed to `apply`, in order (failed ones included).
    pub fn applied(&self) -> Vec<&Ruleset> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Apply(r) => Some(r),
                _ => None,
            })
            .collect()
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

    /// The next `apply` fails with `error` and changes nothing.
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
    fn usable_as_a_trait_object() {
        let mut dp = FakeDataplane::new();
        let d: &mut dyn Dataplane = &mut dp;
        d.apply(&rs("hp", "c")).unwrap();
        assert_eq!(dp.calls().len(), 1);
    }
}
