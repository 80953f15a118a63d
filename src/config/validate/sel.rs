//! Selector-valued fields: parse with positions that point into the YAML scalar (spec §2).

use crate::config::model::At;
use crate::config::yaml::{Node, Value};
use crate::selector::{self, Selector};

use super::fields::{string, Cx};

/// Calico's CRD limit on every selector field.
const MAX_LEN: usize = 1024;

/// Decode a selector field. `Ok(None)`: absent, null or blank (each caller says what that means).
/// `Err(())`: reported. `global()` is refused unless `allow_global` (only a rule's namespaceSelector).
pub(crate) fn selector(
    cx: &mut Cx,
    node: &Node,
    field: &str,
    allow_global: bool,
) -> Result<Option<At<Selector>>, ()> {
    if let Value::Str(text) = &node.value {
        if text.contains(['\n', '\r']) {
            return block_scalar_error(cx, node, field, text);
        }
    }
    let text = match string(cx, node, field) {
        Some(text) => text,
        None if matches!(node.value, Value::Null) => return Ok(None),
        None => return Err(()),
    };
    if text.trim_matches([' ', '\t']).is_empty() {
        return Ok(None);
    }
    if text.chars().count() > MAX_LEN {
        cx.error(
            node,
            format!("`{field}` is longer than {MAX_LEN} characters"),
        );
        return Err(());
    }
    let parsed = match selector::parse(text) {
        Ok(parsed) => parsed,
        Err(err) => {
            let pos = node.char_pos(&cx.file, cx.src, err.offset);
            cx.error_at(
                pos,
                format!("invalid {field} `{}`: {}", shorten(text), err.message),
            );
            return Err(());
        }
    };
    // Calico's CEL rule is a substring test on the text; the tree test catches nothing more, but
    // keeps this correct whatever the spelling.
    if !allow_global && (text.contains("global(") || parsed.contains_global()) {
        cx.error(
            node,
            format!("`global()` is not allowed in `{field}`: it only has a meaning in a rule's `namespaceSelector`"),
        );
        return Err(());
    }
    Ok(Some(cx.at(node, parsed)))
}

/// A newline is a syntax error in a selector (spec §2.1): the usual cause is `selector: |`.
fn block_scalar_error(
    cx: &mut Cx,
    node: &Node,
    field: &str,
    text: &str,
) -> Result<Option<At<Selector>>, ()> {
    let line = text.trim_end_matches(['\n', '\r']);
    let hint = if line.contains(['\n', '\r']) {
        "write the selector on one line".to_owned()
    } else {
        format!("write {field}: {}", crate::config::yaml::yaml_quote(line))
    };
    cx.error(
        node,
        format!("`{field}` contains a line break, which selectors do not allow (a `|` block keeps the final newline): {hint}"),
    );
    Err(())
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= 80 {
        text.to_owned()
    } else {
        let head: String = text.chars().take(77).collect();
        format!("{head}...")
    }
}
