//! A count's noun in the right number, for messages and logs: `1 reply`, `2 replies`.

/// `one` when `n` is 1, else `many`.
pub fn noun(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(noun(1, "reply", "replies"), "reply");
        for n in [0, 2, 10, u64::MAX] {
            assert_eq!(noun(n, "reply", "replies"), "replies");
        }
    }
}
