//! Reading Markdown tables back: a previous BENCHMARKS.md's figures, found by their
//! columns' names rather than their positions, so that a reworded or reordered table
//! still reads.

/// One pipe table: its header cells and its rows' cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The header row.
    pub header: Vec<String>,
    /// The rows under the separator.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The first column whose header satisfies `wanted`.
    pub fn column(&self, wanted: impl Fn(&str) -> bool) -> Option<usize> {
        self.header.iter().position(|h| wanted(h))
    }

    /// The first column whose header is `name` (case-insensitive, backticks ignored).
    pub fn named(&self, name: &str) -> Option<usize> {
        self.column(|h| h.replace('`', "").eq_ignore_ascii_case(name))
    }

    /// Whether the table has every column of `names`.
    pub fn has(&self, names: &[&str]) -> bool {
        names.iter().all(|n| self.named(n).is_some())
    }
}

/// A cell of `row` in column `col` ("" when the row is short).
pub fn cell(row: &[String], col: Option<usize>) -> &str {
    col.and_then(|c| row.get(c)).map_or("", String::as_str)
}

/// A number in a cell: `1,097`, `0.48`, `20.20×`, `**432**`; None for `n/a`, `?`, ``.
pub fn number(text: &str) -> Option<f64> {
    let cleaned: String = text
        .chars()
        .filter(|c| !matches!(c, ',' | '*' | '`' | '×' | ' '))
        .collect();
    cleaned.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn cells(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?;
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    Some(inner.split('|').map(|c| c.trim().to_owned()).collect())
}

fn is_separator(row: &[String]) -> bool {
    !row.is_empty()
        && row.iter().all(|c| {
            let c = c.trim_matches(':');
            !c.is_empty() && c.chars().all(|ch| ch == '-')
        })
}

/// Every pipe table in `text`, in order.
pub fn tables(text: &str) -> Vec<Table> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 1 < lines.len() {
        let head = lines.get(i).and_then(|l| cells(l));
        let separator = lines.get(i + 1).and_then(|l| cells(l));
        match (head, separator) {
            (Some(header), Some(sep)) if is_separator(&sep) => {
                let mut rows = Vec::new();
                i += 2;
                while let Some(row) = lines.get(i).and_then(|l| cells(l)) {
                    rows.push(row);
                    i += 1;
                }
                found.push(Table { header, rows });
            }
            _ => i += 1,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pipe_tables() {
        let text = "\
intro

| path | requests/s | p99 ms |
|---|---:|---:|
| (b) Caddy → app | 4,564 | 2.09 |
| (c) mytunnel | 1,097 | 42.2 |

| a | b |
| --- | :-: |
| 1 |
not a table | x |
";
        let found = tables(text);
        assert_eq!(found.len(), 2);
        let t = found.first().unwrap();
        assert!(t.has(&["path", "requests/s"]));
        assert!(!t.has(&["errors"]));
        let row = t.rows.get(1).unwrap();
        assert_eq!(cell(row, t.named("path")), "(c) mytunnel");
        assert_eq!(number(cell(row, t.named("requests/s"))), Some(1097.0));
        assert_eq!(cell(row, t.named("missing")), "");
        assert_eq!(found.get(1).unwrap().rows.len(), 1);
        assert_eq!(number("20.20×"), Some(20.2));
        assert_eq!(number("**432**"), Some(432.0));
        assert_eq!(number("n/a"), None);
        assert_eq!(number(""), None);
    }
}
