//! Aligning two programs: the longest common subsequence of their elements' fingerprints (Myers' O(ND)
//! algorithm), as the list of places where they differ.
//!
//! Any alignment is sound for `plan` (an element left unmatched only widens the zone that is evaluated
//! exactly); a good one keeps that zone small. Past [`MAX_EDITS`] differences in one program the middle
//! is left unaligned as a whole: a change that large is global anyway.

/// Past this many insertions and deletions, stop aligning (the trace grows with its square).
pub const MAX_EDITS: usize = 1000;

/// A place where the programs differ: elements `a.0..a.1` of the first stand where `b.0..b.1` of the
/// second stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hunk {
    pub a: (usize, usize),
    pub b: (usize, usize),
}

pub fn hunks<T: PartialEq>(a: &[T], b: &[T]) -> Vec<Hunk> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a_rest, b_rest) = (&a[prefix..], &b[prefix..]);
    let suffix = a_rest
        .iter()
        .rev()
        .zip(b_rest.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let am = &a_rest[..a_rest.len() - suffix];
    let bm = &b_rest[..b_rest.len() - suffix];
    if am.is_empty() && bm.is_empty() {
        return Vec::new();
    }
    let whole = || {
        vec![Hunk {
            a: (prefix, prefix + am.len()),
            b: (prefix, prefix + bm.len()),
        }]
    };
    if am.is_empty() || bm.is_empty() {
        return whole();
    }
    let Some(pairs) = myers(am, bm) else {
        return whole();
    };
    // Turn the matched pairs into the gaps between them.
    let mut out = Vec::new();
    let (mut i, mut j) = (0usize, 0usize);
    for (x, y) in pairs
        .into_iter()
        .chain(std::iter::once((am.len(), bm.len())))
    {
        if x > i || y > j {
            out.push(Hunk {
                a: (prefix + i, prefix + x),
                b: (prefix + j, prefix + y),
            });
        }
        i = x + 1;
        j = y + 1;
    }
    out
}

/// The matched index pairs of a shortest edit script, in order; None past [`MAX_EDITS`].
fn myers<T: PartialEq>(a: &[T], b: &[T]) -> Option<Vec<(usize, usize)>> {
    let n = a.len() as isize;
    let m = b.len() as isize;
    let max = (n + m).min(MAX_EDITS as isize);
    let off = max + 1;
    let mut v = vec![0isize; (2 * max + 3) as usize];
    // trace[d]: the entries k = -d-1..=d+1 of `v` before step d (all that step d reads).
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let mut found = None;
    'outer: for d in 0..=max {
        trace.push(v[(off - d - 1) as usize..=(off + d + 1) as usize].to_vec());
        let mut k = -d;
        while k <= d {
            let mut x =
                if k == -d || (k != d && v[(off + k - 1) as usize] < v[(off + k + 1) as usize]) {
                    v[(off + k + 1) as usize]
                } else {
                    v[(off + k - 1) as usize] + 1
                };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[(off + k) as usize] = x;
            if x >= n && y >= m {
                found = Some(d);
                break 'outer;
            }
            k += 2;
        }
    }
    let d_end = found?;
    // Walk back through the trace.
    let mut pairs = Vec::new();
    let (mut x, mut y) = (n, m);
    for d in (1..=d_end).rev() {
        let vd = &trace[d as usize];
        let at = |k: isize| vd[(k + d + 1) as usize];
        let k = x - y;
        let prev_k = if k == -d || (k != d && at(k - 1) < at(k + 1)) {
            k + 1
        } else {
            k - 1
        };
        let prev_x = at(prev_k);
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            x -= 1;
            y -= 1;
            pairs.push((x as usize, y as usize));
        }
        x = prev_x;
        y = prev_y;
    }
    while x > 0 && y > 0 {
        x -= 1;
        y -= 1;
        pairs.push((x as usize, y as usize));
    }
    pairs.reverse();
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply(a: &[u8], b: &[u8]) -> usize {
        // Checks the hunks: everything outside them pairs up equal, in order; returns the edit count.
        let hs = hunks(a, b);
        let (mut i, mut j) = (0, 0);
        let mut edits = 0;
        for h in &hs {
            assert!(h.a.0 >= i && h.b.0 >= j);
            assert_eq!(h.a.0 - i, h.b.0 - j);
            for k in 0..h.a.0 - i {
                assert_eq!(a[i + k], b[j + k]);
            }
            edits += (h.a.1 - h.a.0) + (h.b.1 - h.b.0);
            i = h.a.1;
            j = h.b.1;
        }
        assert_eq!(a.len() - i, b.len() - j);
        for k in 0..a.len() - i {
            assert_eq!(a[i + k], b[j + k]);
        }
        edits
    }

    fn lcs(a: &[u8], b: &[u8]) -> usize {
        let mut t = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                t[i][j] = if a[i] == b[j] {
                    t[i + 1][j + 1] + 1
                } else {
                    t[i + 1][j].max(t[i][j + 1])
                };
            }
        }
        t[0][0]
    }

    #[test]
    fn moves_and_changes() {
        assert!(hunks(&[1, 2, 3], &[1, 2, 3]).is_empty());
        assert_eq!(
            hunks(&[1, 2, 3, 4], &[1, 9, 3, 4]),
            vec![Hunk {
                a: (1, 2),
                b: (1, 2)
            }]
        );
        // A moved element: one deletion, one insertion, everything else aligned.
        assert_eq!(apply(&[1, 2, 3, 4, 5], &[2, 3, 4, 1, 5]), 2);
    }

    proptest! {
        #[test]
        fn shortest_edit_script(a in proptest::collection::vec(0u8..4, 0..30),
                                b in proptest::collection::vec(0u8..4, 0..30)) {
            let edits = apply(&a, &b);
            prop_assert_eq!(edits, a.len() + b.len() - 2 * lcs(&a, &b));
        }
    }
}
