//! The selector language's tests: Calico's own rows, evaluation, canonical forms, hints, and
//! property tests (round trips, no panic on any input).

use std::collections::BTreeMap;

use super::*;
use proptest::prelude::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ok(input: &str) -> Selector {
    match parse(input) {
        Ok(sel) => sel,
        Err(e) => panic!(
            "{input:?} should parse, got error at {}: {}",
            e.offset, e.message
        ),
    }
}

fn bad(input: &str) -> SelectorError {
    match parse(input) {
        Ok(sel) => panic!(
            "{input:?} should be rejected, parsed as {}",
            sel.canonical()
        ),
        Err(e) => e,
    }
}

fn canon(input: &str) -> String {
    ok(input).canonical()
}

/// Asserts the error is at `offset` and its message contains every one of `parts`.
fn assert_err(input: &str, offset: usize, parts: &[&str]) {
    let e = bad(input);
    assert_eq!(
        e.offset, offset,
        "offset for {input:?} (message: {})",
        e.message
    );
    for part in parts {
        assert!(
            e.message.contains(part),
            "message for {input:?} should contain {part:?}, got {:?}",
            e.message
        );
    }
}

// ----- spec §2.5, one test per row -----

#[test]
fn row_colon_true_is_invalid_with_hint() {
    assert_err(
        "nodeport-external-ingress: true",
        25,
        &[
            "expected operator after label",
            "write `nodeport-external-ingress == 'true'`",
            "has(nodeport-external-ingress)",
        ],
    );
}

#[test]
fn row_unquoted_true_is_invalid() {
    assert_err(
        "nodeport-external-ingress == true",
        29,
        &["the value must be a quoted string: write `nodeport-external-ingress == 'true'`"],
    );
}

#[test]
fn row_quoted_true_matches_only_the_string_true() {
    let sel = ok("nodeport-external-ingress == 'true'");
    assert!(sel.matches(&labels(&[("nodeport-external-ingress", "true")])));
    assert!(!sel.matches(&labels(&[("nodeport-external-ingress", "True")])));
    assert!(!sel.matches(&labels(&[("nodeport-external-ingress", "")])));
    assert!(!sel.matches(&labels(&[])));
    assert_eq!(sel.canonical(), "nodeport-external-ingress == \"true\"");
}

#[test]
fn row_has_ignores_the_value() {
    let sel = ok("has(nodeport-external-ingress)");
    assert!(sel.matches(&labels(&[("nodeport-external-ingress", "false")])));
    assert!(sel.matches(&labels(&[("nodeport-external-ingress", "")])));
    assert!(!sel.matches(&labels(&[("other", "true")])));
}

#[test]
fn row_space_before_paren_is_invalid() {
    assert_err(
        "has (kubernetes-host)",
        3,
        &["no space is allowed before `(`: write `has(kubernetes-host)`"],
    );
    assert_err(
        "all ()",
        3,
        &["no space is allowed before `(`: write `all()`"],
    );
    assert_err(
        "global\t()",
        6,
        &["no space is allowed before `(`: write `global()`"],
    );
    assert_err("has (x)", 3, &["write `has(x)`"]);
}

#[test]
fn row_spaces_inside_has_are_fine() {
    let sel = ok("has( kubernetes-host )");
    assert_eq!(sel.canonical(), "has(kubernetes-host)");
    assert_eq!(canon("all(  )"), "all()");
    assert_eq!(canon("global(\t)"), "global()");
}

#[test]
fn row_negated_has_parses() {
    // Quoting for YAML is the loader's business; the selector itself is fine.
    let sel = ok("!has(a)");
    assert!(!sel.matches(&labels(&[("a", "")])));
    assert!(sel.matches(&labels(&[("b", "")])));
    assert_eq!(sel.canonical(), "!has(a)");
}

#[test]
fn row_double_negation_is_has() {
    assert_eq!(ok("!!has(a)").expr(), ok("has(a)").expr());
    assert_eq!(canon("!!has(a)"), "has(a)");
    assert_eq!(canon("! ! !has(a)"), "!has(a)");
}

#[test]
fn row_empty_sets() {
    let in_empty = ok("role in {}");
    let not_in_empty = ok("role not in {}");
    for l in [
        labels(&[]),
        labels(&[("role", "")]),
        labels(&[("role", "x")]),
    ] {
        assert!(!in_empty.matches(&l));
        assert!(not_in_empty.matches(&l));
    }
    assert_eq!(in_empty.canonical(), "role in {}");
    assert_eq!(not_in_empty.canonical(), "role not in {}");
}

#[test]
fn row_trailing_comma_in_set() {
    let sel = ok("a in {'x', }");
    assert_eq!(sel.canonical(), "a in {\"x\"}");
    assert!(sel.matches(&labels(&[("a", "x")])));
}

#[test]
fn row_double_quoted_value_with_apostrophe() {
    let sel = ok("a == \"it's\"");
    assert!(sel.matches(&labels(&[("a", "it's")])));
    assert_eq!(sel.canonical(), "a == \"it's\"");
    let sel = ok("a == 'say \"hi\"'");
    assert!(sel.matches(&labels(&[("a", "say \"hi\"")])));
    assert_eq!(sel.canonical(), "a == 'say \"hi\"'");
}

#[test]
fn row_notin_and_startswith_spellings() {
    assert_eq!(canon("a notin {'x'}"), "a not in {\"x\"}");
    assert_eq!(canon("a startswith 'p'"), "a starts with \"p\"");
    assert_eq!(canon("a endswith 'p'"), "a ends with \"p\"");
}

#[test]
fn row_not_binds_to_one_test() {
    let sel = ok("!a == 'b' || c == 'd'");
    let expected = Expr::Or(vec![
        Expr::Not(Box::new(Expr::Cmp {
            label: "a".into(),
            op: CmpOp::Eq,
            value: "b".into(),
        })),
        Expr::Cmp {
            label: "c".into(),
            op: CmpOp::Eq,
            value: "d".into(),
        },
    ]);
    assert_eq!(sel.expr(), &expected);
    assert_eq!(sel.canonical(), "(!a == \"b\" || c == \"d\")");
    assert_eq!(canon("!a in {'x'}"), "!a in {\"x\"}");
}

#[test]
fn row_docs_example_precedence() {
    let sel =
        ok("! has(my-label) || my-label starts with 'prod' && role in {'frontend','business'}");
    assert_eq!(
        sel.canonical(),
        "(!has(my-label) || (my-label starts with \"prod\" && role in {\"business\", \"frontend\"}))"
    );
    assert!(sel.matches(&labels(&[])));
    assert!(sel.matches(&labels(&[("my-label", "prod-1"), ("role", "frontend")])));
    assert!(!sel.matches(&labels(&[("my-label", "prod-1"), ("role", "db")])));
    assert!(!sel.matches(&labels(&[("my-label", "dev"), ("role", "frontend")])));
}

#[test]
fn row_invalid_forms() {
    for input in ["'b1' == b", "b == b", "b", "a b", "()", "(a == \"x\""] {
        bad(input);
    }
    assert_err(
        "'b1' == b",
        0,
        &["must be on the right", "write `b == 'b1'`"],
    );
    assert_err(
        "b == b",
        5,
        &["the value must be a quoted string: write `b == 'b'`"],
    );
    assert_err("b", 1, &["expected operator after label `b`", "has(b)"]);
    assert_err(
        "a b",
        2,
        &["expected operator after label `a`", "found `b`"],
    );
    assert_err("()", 0, &["empty parentheses"]);
    assert_err("(a == \"x\"", 0, &["never closed"]);
}

#[test]
fn row_blank_selectors_are_all() {
    for input in ["", "   ", "\t", " \t "] {
        let sel = ok(input);
        assert!(sel.is_all(), "{input:?}");
        assert_eq!(sel.canonical(), "all()");
        assert_eq!(sel.source(), input);
        assert!(sel.matches(&labels(&[])));
    }
}

#[test]
fn row_line_break_is_invalid() {
    let msg =
        "selectors cannot contain a line break; in YAML use a plain or quoted scalar, not `|`";
    assert_err("has(a)\n", 6, &[msg]);
    assert_err("a == 'x'\r\n", 8, &[msg]);
    assert_err("a ==\n'x'", 4, &[msg]);
    // Even inside a literal: a label value cannot hold a line break anyway.
    assert_err("a == 'x\ny'", 7, &[msg]);
    assert_err("\n", 0, &[msg]);
}

#[test]
fn row_global_at_top_level_parses_but_is_flagged() {
    // The CEL rejection belongs to validation; the parser reports what it saw.
    let sel = ok("global()");
    assert!(sel.is_global());
    assert!(sel.contains_global());
    assert!(!sel.is_all());
    assert!(sel.matches(&labels(&[])));
}

// ----- spec §2.3 evaluation table -----

#[test]
fn eval_all_and_global_always_true() {
    for input in ["all()", "global()", ""] {
        assert!(ok(input).matches(&labels(&[])));
        assert!(ok(input).matches(&labels(&[("a", "b")])));
    }
}

#[test]
fn eval_has() {
    let sel = ok("has(k)");
    assert!(sel.matches(&labels(&[("k", "")])));
    assert!(sel.matches(&labels(&[("k", "v")])));
    assert!(!sel.matches(&labels(&[("K", "v")])));
}

#[test]
fn eval_eq_and_ne() {
    let eq = ok("k == 'v'");
    let ne = ok("k != 'v'");
    let cases = [
        (labels(&[]), false, true),
        (labels(&[("k", "v")]), true, false),
        (labels(&[("k", "w")]), false, true),
        (labels(&[("k", "")]), false, true),
        (labels(&[("other", "v")]), false, true),
    ];
    for (l, eq_result, ne_result) in cases {
        assert_eq!(eq.matches(&l), eq_result, "== on {l:?}");
        assert_eq!(ne.matches(&l), ne_result, "!= on {l:?}");
    }
}

#[test]
fn eval_in_and_not_in() {
    let is_in = ok("k in {'a', 'b'}");
    let not_in = ok("k not in {'a', 'b'}");
    let cases = [
        (labels(&[]), false, true),
        (labels(&[("k", "a")]), true, false),
        (labels(&[("k", "b")]), true, false),
        (labels(&[("k", "c")]), false, true),
        (labels(&[("k", "")]), false, true),
    ];
    for (l, in_result, not_in_result) in cases {
        assert_eq!(is_in.matches(&l), in_result, "in on {l:?}");
        assert_eq!(not_in.matches(&l), not_in_result, "not in on {l:?}");
    }
    assert!(ok("k in {''}").matches(&labels(&[("k", "")])));
}

#[test]
fn eval_contains_starts_ends() {
    let contains = ok("k contains 'ro'");
    let starts = ok("k starts with 'pro'");
    let ends = ok("k ends with 'od'");
    let absent = labels(&[]);
    assert!(!contains.matches(&absent));
    assert!(!starts.matches(&absent));
    assert!(!ends.matches(&absent));
    let prod = labels(&[("k", "prod")]);
    assert!(contains.matches(&prod));
    assert!(starts.matches(&prod));
    assert!(ends.matches(&prod));
    let dev = labels(&[("k", "dev")]);
    assert!(!contains.matches(&dev));
    assert!(!starts.matches(&dev));
    assert!(!ends.matches(&dev));
    // The empty string is a substring, prefix and suffix of every present value.
    for input in ["k contains ''", "k starts with ''", "k ends with ''"] {
        assert!(ok(input).matches(&labels(&[("k", "")])));
        assert!(!ok(input).matches(&absent));
    }
}

#[test]
fn eval_boolean_logic() {
    let a = labels(&[("a", "1")]);
    let b = labels(&[("b", "1")]);
    let ab = labels(&[("a", "1"), ("b", "1")]);
    let and = ok("has(a) && has(b)");
    let or = ok("has(a) || has(b)");
    let not = ok("!(has(a) && has(b))");
    assert!(!and.matches(&a) && !and.matches(&b) && and.matches(&ab));
    assert!(or.matches(&a) && or.matches(&b) && !or.matches(&labels(&[])));
    assert!(not.matches(&a) && !not.matches(&ab));
    assert!(!ok("!all()").matches(&a));
    assert!(!ok("!global()").matches(&a));
}

// ----- lexical rules §2.1 -----

#[test]
fn whitespace_is_optional_between_punctuation() {
    let sel = ok("a=='b'&&!has(c)");
    assert_eq!(sel.canonical(), "(a == \"b\" && !has(c))");
    assert_eq!(canon("a!='b'||(c in{'x'})"), "(a != \"b\" || c in {\"x\"})");
    assert_eq!(canon("\ta\t==\t'b'\t"), "a == \"b\"");
    assert_eq!(canon("a contains'x'"), "a contains \"x\"");
    assert_eq!(canon("a in{'x'}"), "a in {\"x\"}");
}

#[test]
fn label_characters_and_length() {
    assert_eq!(canon("a.b/c_d-E9 == 'x'"), "a.b/c_d-E9 == \"x\"");
    assert_eq!(
        canon("has(projectcalico.org/namespace)"),
        "has(projectcalico.org/namespace)"
    );
    let longest = "a".repeat(MAX_LABEL_LEN);
    ok(&format!("has({longest})"));
    ok(&format!("{longest} == 'x'"));
    let too_long = "a".repeat(MAX_LABEL_LEN + 1);
    assert_err(&format!("has({too_long})"), 4, &["maximum is 512"]);
    assert_err(
        &format!("x == 'y' && {too_long} == 'x'"),
        12,
        &["maximum is 512"],
    );
}

#[test]
fn labels_may_be_named_like_keywords() {
    assert_eq!(canon("in in {'x'}"), "in in {\"x\"}");
    assert_eq!(canon("all == 'x'"), "all == \"x\"");
    assert_eq!(canon("has == 'x'"), "has == \"x\"");
    assert_eq!(canon("global != 'x'"), "global != \"x\"");
    assert_eq!(canon("not not in {}"), "not not in {}");
    assert_eq!(canon("contains contains 'x'"), "contains contains \"x\"");
    assert_eq!(canon("has(in)"), "has(in)");
    assert!(ok("all == 'x'").matches(&labels(&[("all", "x")])));
}

#[test]
fn word_operators_need_a_boundary_and_lowercase() {
    assert_err(
        "a inx {'x'}",
        2,
        &["expected operator after label `a`", "`inx`"],
    );
    assert_err("a in-x {'x'}", 2, &["`in-x`"]);
    assert_err("a containsx 'x'", 2, &["`containsx`"]);
    assert_err("a IN {'x'}", 2, &["operators are lowercase: write `in`"]);
    assert_err("a Contains 'x'", 2, &["write `contains`"]);
    assert_err("a not inn {'x'}", 6, &["expected `in` after `not`"]);
    assert_err("a starts 'x'", 9, &["expected `with` after `starts`"]);
    assert_err("a ends wit 'x'", 7, &["expected `with` after `ends`"]);
    // A label and an operator merge into one label without whitespace between them.
    assert_err("ain {'x'}", 4, &["expected operator after label `ain`"]);
}

#[test]
fn word_operator_spellings() {
    assert_eq!(canon("a not\t in {}"), "a not in {}");
    assert_eq!(canon("a starts\twith 'x'"), "a starts with \"x\"");
    assert_eq!(canon("a ends  with 'x'"), "a ends with \"x\"");
    assert_eq!(canon("a not in{'x'}"), "a not in {\"x\"}");
}

#[test]
fn lone_punctuation_is_an_error() {
    assert_err("a = 'b'", 2, &["use `==`", "write `a == 'b'`"]);
    assert_err("a='b'", 1, &["use `==`", "write `a == 'b'`"]);
    assert_err("a = b", 2, &["use `==`", "write `a == 'b'`"]);
    assert_err("has(a) & has(b)", 7, &["use `&&`"]);
    assert_err("has(a) | has(b)", 7, &["use `||`"]);
    assert_err("has(a) && & has(b)", 10, &["use `&&`"]);
    assert_err("has(a) && | has(b)", 10, &["use `||`"]);
}

#[test]
fn not_equal_is_read_greedily() {
    assert_eq!(canon("a!='b'"), "a != \"b\"");
    assert_err("!= 'b'", 0, &["`!=` needs a label on its left"]);
    assert_err("!!='b'", 1, &["`!=` needs a label on its left"]);
    assert_err("a ! = 'b'", 2, &["expected operator after label `a`"]);
}

#[test]
fn string_literals() {
    assert_eq!(canon("a == ''"), "a == \"\"");
    assert_eq!(canon("a == \"\""), "a == \"\"");
    assert_eq!(canon("a == 'x && y || (z)'"), "a == \"x && y || (z)\"");
    assert_eq!(canon("a == 'ü ‘x’'"), "a == \"ü ‘x’\"");
    assert_err("a == 'x", 5, &["never closed", "'"]);
    assert_err("a in {'x", 6, &["never closed"]);
}

// ----- grammar §2.2 -----

#[test]
fn structural_errors() {
    assert_err(
        "has(a) &&",
        9,
        &["expected a test after `&&`", "end of the selector"],
    );
    assert_err("has(a) ||", 9, &["after `||`"]);
    assert_err("&& has(a)", 0, &["expected a test", "`&&`"]);
    assert_err("!", 1, &["after `!`"]);
    assert_err("( )", 0, &["empty parentheses"]);
    assert_err("has(a))", 6, &["unmatched `)`"]);
    assert_err("(has(a) has(b))", 8, &["`&&`, `||` or `)`"]);
    assert_err("has(a) has(b)", 7, &["`&&`, `||` or the end"]);
    assert_err("a == 'x' b == 'y'", 9, &["found `b`"]);
    assert_err("has(a) and has(b)", 7, &["use `&&`"]);
    assert_err("has(a) OR has(b)", 7, &["use `||`"]);
    assert_err("has()", 4, &["needs a label name"]);
    assert_err("has('a')", 4, &["not quoted: write `has(a)`"]);
    assert_err("has(a", 5, &["never closed"]);
    assert_err("has(a b)", 6, &["expected `)`"]);
    assert_err("all(x)", 4, &["takes no argument"]);
    assert_err("global(", 7, &["never closed"]);
    assert_err("foo(x)", 3, &["the only functions are"]);
    assert_err("a == {'x'}", 5, &["not a set", "a in {'a', 'b'}"]);
    assert_err("a in 'x'", 5, &["braces", "write `a in {'x'}`"]);
    assert_err("a in ('x', 'y')", 5, &["braces"]);
    assert_err("a in", 4, &["expected a set in braces"]);
    assert_err("a in {,}", 6, &["remove the extra `,`"]);
    assert_err("a in {'x',,}", 10, &["remove the extra `,`"]);
    assert_err("a in {'x' 'y'}", 10, &["expected `,` or `}`"]);
    assert_err(
        "a in {x}",
        6,
        &["set members must be quoted strings: write `'x'`"],
    );
    assert_err(
        "env in (prod, 'dev')",
        7,
        &["write `env in {'prod', 'dev'}`"],
    );
    assert_err("env notin [prod]", 10, &["write `env not in {'prod'}`"]);
    assert_err("a == 'x', b == 'y'", 8, &["use `&&`"]);
    assert_err("not has(a)", 4, &["write `!` instead of `not`"]);
    assert_err("not (has(a))", 4, &["write `!` instead of `not`"]);
    ok("not == 'x'");
    assert_err("a > '1'", 2, &["found `>`"]);
    assert_err("a in {'x'", 5, &["never closed"]);
    assert_err("a ==", 4, &["expected a quoted value after `==`"]);
    assert_err("has(a) == 'x'", 7, &["found `==`"]);
    assert_err("a == 'x' == 'y'", 9, &["found `==`"]);
}

#[test]
fn set_literals_sorted_and_deduplicated() {
    assert_eq!(
        canon("a in {'z', \"b\", 'z', 'a', 'b',}"),
        "a in {\"a\", \"b\", \"z\"}"
    );
    assert_eq!(ok("a in {'x','x'}").expr(), ok("a in {'x'}").expr());
    assert_eq!(
        canon("a in {'say \"hi\"', \"it's\"}"),
        "a in {\"it's\", 'say \"hi\"'}"
    );
}

#[test]
fn grouping_and_negation_canonical_forms() {
    assert_eq!(canon("(has(a))"), "has(a)");
    assert_eq!(canon("((has(a)))"), "has(a)");
    assert_eq!(canon("!(!has(a))"), "has(a)");
    assert_eq!(canon("!(has(a) && has(b))"), "!(has(a) && has(b))");
    assert_eq!(
        canon("has(a) && has(b) && has(c)"),
        "(has(a) && has(b) && has(c))"
    );
    assert_eq!(
        canon("(has(a) && has(b)) && has(c)"),
        "((has(a) && has(b)) && has(c))"
    );
    assert_eq!(
        canon("has(a) || has(b) && has(c) || has(d)"),
        "(has(a) || (has(b) && has(c)) || has(d))"
    );
    assert_eq!(
        canon("(has(a) || has(b)) && has(c)"),
        "((has(a) || has(b)) && has(c))"
    );
}

#[test]
fn is_all_is_global_contains_global() {
    assert!(Selector::all().is_all());
    assert!(Selector::default().is_all());
    assert_eq!(Selector::all().canonical(), "all()");
    assert!(ok("all()").is_all());
    assert!(ok(" ( all( ) ) ").is_all());
    assert!(!ok("!all()").is_all());
    assert!(!ok("all() && has(a)").is_all());
    assert!(ok("(global())").is_global());
    assert!(!ok("global() && has(a)").is_global());
    assert!(ok("global() && has(a)").contains_global());
    assert!(ok("has(a) || !(has(b) && global())").contains_global());
    assert!(!ok("has(a)").contains_global());
    assert!(!ok("a == 'global()'").contains_global());
    assert!(!Selector::all().contains_global());
}

#[test]
fn display_source_and_from_str() {
    let sel: Selector = "a=='b'".parse().expect("valid selector");
    assert_eq!(sel.to_string(), "a == \"b\"");
    assert_eq!(sel.source(), "a=='b'");
    let e = bad("a = 'b'");
    assert_eq!(e.to_string(), e.message);
}

// ----- operator-facing hints -----

#[test]
fn hint_colon_generalises() {
    assert_err(
        "role: db",
        4,
        &[
            "expected operator after label `role`",
            "write `role == 'db'`",
            "`has(role)`",
        ],
    );
    assert_err("role: 'db'", 4, &["write `role == 'db'`"]);
    assert_err("role:", 4, &["write `role == 'value'`"]);
    assert_err("role:\"it's\"", 4, &["write `role == \"it's\"`"]);
}

#[test]
fn hint_unquoted_values() {
    assert_err(
        "k == v",
        5,
        &["the value must be a quoted string: write `k == 'v'`"],
    );
    assert_err(
        "k == true",
        5,
        &["the value must be a quoted string: write `k == 'true'`"],
    );
    assert_err("k != 10.0.0.1", 5, &["write `k != '10.0.0.1'`"]);
    assert_err("k starts with prod", 14, &["write `k starts with 'prod'`"]);
    assert_err("(k == v)", 6, &["write `k == 'v'`"]);
}

#[test]
fn hint_typographic_quotes() {
    assert_err(
        "nodeport-external-ingress == ‘true’",
        29,
        &[
            "ASCII quotes",
            "write `nodeport-external-ingress == 'true'`",
        ],
    );
    assert_err("a == “x”", 5, &["ASCII quotes", "write `a == 'x'`"]);
    assert_err(
        "a == `x`",
        5,
        &["a backtick (`)", "ASCII quotes", "write `a == 'x'`"],
    );
    assert_err("a in {‘x’}", 6, &["ASCII quotes"]);
    assert_err("a ‘x’", 2, &["ASCII quotes", "write `a == 'x'`"]);
    assert_err("‘a’ == 'x'", 0, &["ASCII quotes"]);
    assert_err("has(‘a’)", 4, &["ASCII quotes"]);
    assert_err("a in ‘x’", 5, &["ASCII quotes"]);
}

#[test]
fn hint_literal_on_the_left() {
    assert_err("'v' == k", 0, &["must be on the right", "write `k == 'v'`"]);
    assert_err("has(a) && \"v\" != k", 10, &["write `k != 'v'`"]);
    assert_err("'v'", 0, &["must be on the right", "label == 'value'"]);
}

#[test]
fn hint_odd_whitespace() {
    assert_err(
        "a\u{00A0}== 'x'",
        1,
        &["no-break space", "only spaces and tabs"],
    );
    assert_err("has(a)\u{3000}&& has(b)", 6, &["only spaces and tabs"]);
}

// ----- positions are in characters -----

#[test]
fn offsets_count_characters_not_bytes() {
    // "ü" is two bytes; the error is at character 13, byte 15.
    assert_err("a == 'üü' && ü", 13, &["expected a test after `&&`"]);
    assert_err("é == 'x'", 0, &["`é`"]);
    assert_err(
        "a == '日本' && b",
        14,
        &["expected operator after label `b`"],
    );
    assert_err("a == '🦀' || 🦀", 12, &["`🦀`"]);
}

#[test]
fn control_characters_are_described_not_printed() {
    let e = bad("a == 'x' \u{0}");
    assert_eq!(e.offset, 9);
    assert!(e.message.contains("U+0000"), "{}", e.message);
}

// ----- robustness -----

#[test]
fn deep_nesting_up_to_the_limit() {
    let deep = format!(
        "{}has(a){}",
        "(".repeat(MAX_NESTING),
        ")".repeat(MAX_NESTING)
    );
    assert_eq!(canon(&deep), "has(a)");
    let too_deep = format!(
        "{}has(a){}",
        "(".repeat(MAX_NESTING + 1),
        ")".repeat(MAX_NESTING + 1)
    );
    assert_err(&too_deep, MAX_NESTING, &["nested more than 512"]);
    let nested_and = format!(
        "{}has(a){}",
        "has(a) && (".repeat(MAX_NESTING),
        ")".repeat(MAX_NESTING)
    );
    assert!(ok(&nested_and).matches(&labels(&[("a", "")])));
    let nots = format!("{}has(a)", "!".repeat(100_001));
    assert_eq!(canon(&nots), "!has(a)");
}

#[test]
fn long_and_flat_expressions() {
    let flat = vec!["has(a)"; 5_000].join(" || ");
    assert!(ok(&flat).matches(&labels(&[("a", "")])));
}

// ----- property tests -----

/// Tokens that selectors are made of, plus near misses, so that random joins reach deep into
/// the grammar.
const TOKENS: &[&str] = &[
    "a",
    "b",
    "in",
    "has",
    "all",
    "global",
    "not",
    "x.y/z",
    "'x'",
    "\"y\"",
    "''",
    "'it\"s'",
    "\"it's\"",
    "'",
    "\"",
    "==",
    "!=",
    "=",
    "!",
    "&&",
    "||",
    "&",
    "|",
    "(",
    ")",
    "{",
    "}",
    ",",
    "has(",
    "all(",
    "global(",
    "has(a)",
    "all()",
    "global()",
    " in ",
    " not in ",
    " notin ",
    " contains ",
    " starts with ",
    " startswith ",
    " ends with ",
    " endswith ",
    "IN",
    ":",
    "‘",
    "”",
    "ü",
    "\u{00A0}",
    "\n",
];

const KEYS: &[&str] = &["a", "b", "in", "has", "x.y/z", "not"];
const VALUES: &[&str] = &["", "x", "y", "it\"s", "it's", "xy", "ü"];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(TOKENS),
            prop::sample::select(&["", " ", "\t"][..]),
        ),
        0..14,
    )
    .prop_map(|parts| {
        parts
            .into_iter()
            .map(|(tok, sep)| format!("{tok}{sep}"))
            .collect()
    })
}

fn label_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(KEYS).prop_map(str::to_string),
        prop::sample::select(VALUES).prop_map(str::to_string),
        0..5,
    )
}

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(VALUES).prop_map(str::to_string)
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(KEYS).prop_map(str::to_string),
        "[A-Za-z0-9_./-]{1,12}",
    ]
}

fn ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["", " ", "\t", "  "][..])
}

/// A value in either kind of quote that can hold it.
fn quoted_value() -> impl Strategy<Value = String> {
    (value(), any::<bool>()).prop_map(|(v, double)| {
        if v.contains('"') || (!double && !v.contains('\'')) {
            format!("'{v}'")
        } else {
            format!("\"{v}\"")
        }
    })
}

/// Valid selector text written in the many ways the grammar allows: optional and extra
/// whitespace, both quote kinds, every operator spelling, redundant `!` and parentheses,
/// duplicate set members and trailing commas.
fn styled_selector() -> impl Strategy<Value = String> {
    let cmp = (
        label(),
        ws(),
        prop::sample::select(&["==", "!="][..]),
        ws(),
        quoted_value(),
    )
        .prop_map(|(l, w1, op, w2, v)| format!("{l}{w1}{op}{w2}{v}"));
    let word_cmp = (
        label(),
        prop::sample::select(
            &[
                " contains ",
                " starts with ",
                " startswith",
                "\tends\t with ",
                " endswith ",
            ][..],
        ),
        ws(),
        quoted_value(),
    )
        .prop_map(|(l, op, w, v)| format!("{l}{op}{w}{v}"));
    let set = (
        label(),
        prop::sample::select(&[" in", " not in", " notin", "\tnot  in"][..]),
        ws(),
        prop::collection::vec(quoted_value(), 0..4),
        prop::sample::select(&["", ",", " , "][..]),
    )
        .prop_map(|(l, op, w, members, trailing)| {
            let trailing = if members.is_empty() { "" } else { trailing };
            format!("{l}{op}{w}{{{}{trailing}}}", members.join(", "))
        });
    let leaf = prop_oneof![
        ws().prop_map(|w| format!("all({w})")),
        ws().prop_map(|w| format!("global({w})")),
        (ws(), label(), ws()).prop_map(|(a, l, b)| format!("has({a}{l}{b})")),
        cmp,
        word_cmp,
        set,
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (
                prop::sample::select(&["!", "! ", "!!", "!\t!\t!"][..]),
                inner.clone()
            )
                .prop_map(|(neg, e)| format!("{neg}{e}")),
            (ws(), inner.clone(), ws()).prop_map(|(a, e, b)| format!("({a}{e}{b})")),
            (
                inner.clone(),
                prop::sample::select(&[" && ", "&&", "\t||\t", "||"][..]),
                inner
            )
                .prop_map(|(a, op, b)| format!("{a}{op}{b}")),
        ]
    })
}

/// Valid text with one character deleted, or one token inserted or substituted: near misses
/// that exercise the error paths deep inside the grammar.
fn near_miss() -> impl Strategy<Value = String> {
    (
        styled_selector(),
        any::<prop::sample::Index>(),
        prop::sample::select(TOKENS),
        0..3u8,
    )
        .prop_map(|(text, at, token, kind)| {
            let mut chars: Vec<char> = text.chars().collect();
            let i = at.index(chars.len() + 1);
            match kind {
                0 if i < chars.len() => {
                    chars.remove(i);
                }
                1 if i < chars.len() => {
                    chars.splice(i..=i, token.chars());
                }
                _ => {
                    chars.splice(i..i, token.chars());
                }
            }
            chars.into_iter().collect()
        })
}

/// Arbitrary trees, including shapes the parser never builds (`Not(Not(_))`, one-operand
/// groups), which still have to print as text with the same meaning.
fn expr() -> impl Strategy<Value = Expr> {
    let cmp_op = prop::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Contains,
        CmpOp::StartsWith,
        CmpOp::EndsWith,
    ]);
    let set_op = prop::sample::select(vec![SetOp::In, SetOp::NotIn]);
    let leaf = prop_oneof![
        Just(Expr::All),
        Just(Expr::Global),
        label().prop_map(Expr::Has),
        (label(), cmp_op, value()).prop_map(|(label, op, value)| Expr::Cmp { label, op, value }),
        (label(), set_op, prop::collection::btree_set(value(), 0..4))
            .prop_map(|(label, op, values)| Expr::Set { label, op, values }),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 1..4).prop_map(Expr::And),
            prop::collection::vec(inner, 1..4).prop_map(Expr::Or),
        ]
    })
}

/// Parsing the canonical text gives the same tree, the same text and the same verdicts.
fn check_round_trip(
    sel: &Selector,
    maps: &[BTreeMap<String, String>],
) -> Result<(), TestCaseError> {
    let text = sel.canonical();
    let again = parse(&text)
        .map_err(|e| TestCaseError::fail(format!("canonical {text:?} rejected: {e}")))?;
    prop_assert_eq!(again.canonical(), text.clone());
    prop_assert_eq!(again.expr(), sel.expr());
    for map in maps {
        prop_assert_eq!(
            again.matches(map),
            sel.matches(map),
            "{} on {:?}",
            text,
            map
        );
    }
    Ok(())
}

fn check_error_offset(input: &str, e: &SelectorError) -> Result<(), TestCaseError> {
    prop_assert!(
        e.offset <= input.chars().count(),
        "offset {} past end of {:?}",
        e.offset,
        input
    );
    prop_assert!(!e.message.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(
        input in any::<String>(),
        maps in prop::collection::vec(label_map(), 4),
    ) {
        match parse(&input) {
            Ok(sel) => check_round_trip(&sel, &maps)?,
            Err(e) => check_error_offset(&input, &e)?,
        }
    }

    #[test]
    fn token_soup_never_panics_and_round_trips(
        input in token_soup(),
        maps in prop::collection::vec(label_map(), 4),
    ) {
        match parse(&input) {
            Ok(sel) => check_round_trip(&sel, &maps)?,
            Err(e) => check_error_offset(&input, &e)?,
        }
    }

    #[test]
    fn styled_selectors_parse_and_round_trip(
        input in styled_selector(),
        maps in prop::collection::vec(label_map(), 8),
    ) {
        let sel = parse(&input)
            .map_err(|e| TestCaseError::fail(format!("{input:?} rejected at {}: {e}", e.offset)))?;
        check_round_trip(&sel, &maps)?;
    }

    #[test]
    fn near_misses_never_panic(
        input in near_miss(),
        maps in prop::collection::vec(label_map(), 4),
    ) {
        match parse(&input) {
            Ok(sel) => check_round_trip(&sel, &maps)?,
            Err(e) => check_error_offset(&input, &e)?,
        }
    }

    #[test]
    fn printed_trees_parse_to_the_same_meaning(
        tree in expr(),
        maps in prop::collection::vec(label_map(), 8),
    ) {
        let mut text = String::new();
        tree.write_canonical(&mut text);
        let sel = parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text:?} rejected: {e}")))?;
        for map in &maps {
            prop_assert_eq!(sel.matches(map), tree.matches(map), "{} on {:?}", text, map);
        }
        check_round_trip(&sel, &maps)?;
    }
}
