//! Command-line flags as every mytunnel program reads them: `--name value` or
//! `--name=value`.

/// A word read as a flag: `--name=value` is the name and its inline value; any other word
/// is itself, with no value.
pub fn split_inline(word: &str) -> (&str, Option<&str>) {
    match word.split_once('=') {
        Some((name, value)) if name.starts_with("--") => (name, Some(value)),
        _ => (word, None),
    }
}

/// The value of flag `name`: its inline value (from [`split_inline`]), else the next word
/// of `rest`, which it takes.
///
/// # Errors
///
/// `"<name> needs a value"` when it has neither.
pub fn value<'a, S>(
    name: &str,
    inline: Option<&str>,
    rest: &mut impl Iterator<Item = &'a S>,
) -> Result<String, String>
where
    S: AsRef<str> + ?Sized + 'a,
{
    match inline {
        Some(value) => Ok(value.to_owned()),
        None => rest
            .next()
            .map(|word| word.as_ref().to_owned())
            .ok_or_else(|| format!("{name} needs a value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_inline_or_the_next_word() {
        assert_eq!(split_inline("--ttl=90s"), ("--ttl", Some("90s")));
        assert_eq!(split_inline("--ttl"), ("--ttl", None));
        assert_eq!(split_inline("--a=b=c"), ("--a", Some("b=c")));
        assert_eq!(split_inline("a=b"), ("a=b", None));

        let words = ["90s".to_owned(), "--name".to_owned()];
        let mut rest = words.iter();
        assert_eq!(value("--ttl", Some("1m"), &mut rest), Ok("1m".to_owned()));
        assert_eq!(value("--ttl", None, &mut rest), Ok("90s".to_owned()));
        assert_eq!(rest.next().map(String::as_str), Some("--name"));
        assert_eq!(
            value("--ttl", None, &mut rest),
            Err("--ttl needs a value".to_owned())
        );
    }
}
