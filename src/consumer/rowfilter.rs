//! Row filters from manifests: a boolean GoogleSQL expression that must stay inside its
//! `WHERE (…)`. Checked by tokenizing, not by pattern matching: only literals, the source's
//! columns, operators, balanced parentheses, a short list of keywords and scalar functions are
//! allowed. So a filter cannot end the statement (`;`), comment out the rest (`--`, `#`, `/*`),
//! close the parenthesis it is wrapped in, read another table (no `SELECT`, `FROM`, dotted names
//! or quoted table paths), or take query parameters. BigQuery then confirms the whole view query
//! with a dry run before the view is written.

use std::fmt;

/// Keywords a filter may use.
const KEYWORDS: &[&str] = &[
    "AND",
    "OR",
    "NOT",
    "IS",
    "NULL",
    "TRUE",
    "FALSE",
    "IN",
    "BETWEEN",
    "LIKE",
    "AS",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "INTERVAL",
    "DATE",
    "TIMESTAMP",
    "DATETIME",
    "TIME",
    "NUMERIC",
    "BIGNUMERIC",
    "JSON",
    // types after AS in CAST
    "STRING",
    "BYTES",
    "INT64",
    "FLOAT64",
    "BOOL", // date parts after INTERVAL / in DATE_SUB etc.
    "MICROSECOND",
    "MILLISECOND",
    "SECOND",
    "MINUTE",
    "HOUR",
    "DAY",
    "WEEK",
    "MONTH",
    "QUARTER",
    "YEAR",
];

/// GoogleSQL reserved words: never names, and (outside [`KEYWORDS`]) never allowed in a filter.
const RESERVED: &[&str] = &[
    "ALL",
    "AND",
    "ANY",
    "ARRAY",
    "AS",
    "ASC",
    "ASSERT_ROWS_MODIFIED",
    "AT",
    "BETWEEN",
    "BY",
    "CASE",
    "CAST",
    "COLLATE",
    "CONTAINS",
    "CREATE",
    "CROSS",
    "CUBE",
    "CURRENT",
    "DEFAULT",
    "DEFINE",
    "DESC",
    "DISTINCT",
    "ELSE",
    "END",
    "ENUM",
    "ESCAPE",
    "EXCEPT",
    "EXCLUDE",
    "EXISTS",
    "EXTRACT",
    "FALSE",
    "FETCH",
    "FOLLOWING",
    "FOR",
    "FROM",
    "FULL",
    "GROUP",
    "GROUPING",
    "GROUPS",
    "HASH",
    "HAVING",
    "IF",
    "IGNORE",
    "IN",
    "INNER",
    "INTERSECT",
    "INTERVAL",
    "INTO",
    "IS",
    "JOIN",
    "LATERAL",
    "LEFT",
    "LIKE",
    "LIMIT",
    "LOOKUP",
    "MERGE",
    "NATURAL",
    "NEW",
    "NO",
    "NOT",
    "NULL",
    "NULLS",
    "OF",
    "ON",
    "OR",
    "ORDER",
    "OUTER",
    "OVER",
    "PARTITION",
    "PRECEDING",
    "PROTO",
    "QUALIFY",
    "RANGE",
    "RECURSIVE",
    "RESPECT",
    "RIGHT",
    "ROLLUP",
    "ROWS",
    "SELECT",
    "SET",
    "SOME",
    "STRUCT",
    "TABLESAMPLE",
    "THEN",
    "TO",
    "TREAT",
    "TRUE",
    "UNBOUNDED",
    "UNION",
    "UNNEST",
    "USING",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
    "WITHIN",
];

/// Scalar functions a filter may call.
const FUNCTIONS: &[&str] = &[
    "CAST",
    "SAFE_CAST",
    "COALESCE",
    "IFNULL",
    "NULLIF",
    "IF",
    "LOWER",
    "UPPER",
    "TRIM",
    "LENGTH",
    "STARTS_WITH",
    "ENDS_WITH",
    "STRPOS",
    "SUBSTR",
    "REGEXP_CONTAINS",
    "ABS",
    "ROUND",
    "MOD",
    "DATE",
    "TIMESTAMP",
    "DATETIME",
    "EXTRACT",
    "CURRENT_DATE",
    "CURRENT_TIMESTAMP",
    "CURRENT_DATETIME",
    "DATE_SUB",
    "DATE_ADD",
    "TIMESTAMP_SUB",
    "TIMESTAMP_ADD",
    "DATE_DIFF",
    "TIMESTAMP_DIFF",
    "DATE_TRUNC",
    "TIMESTAMP_TRUNC",
    "FORMAT_DATE",
    "FORMAT_TIMESTAMP",
    "PARSE_DATE",
    "PARSE_TIMESTAMP",
    "GREATEST",
    "LEAST",
];

/// Why a filter was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(msg.into()))
}

/// Checks `filter` against the source's `columns` (case-insensitive). Returns the columns it
/// reads. With `columns: None` (source not known yet) the structure is checked and every name that
/// is not a keyword or function counts as a column; BigQuery's dry run checks the names later.
pub fn check(filter: &str, columns: Option<&[String]>) -> Result<Vec<String>, FilterError> {
    let is_column = |name: &str| match columns {
        Some(cols) => cols.iter().find(|c| c.eq_ignore_ascii_case(name)).cloned(),
        None if !KEYWORDS.contains(&name.to_ascii_uppercase().as_str()) && !name.contains('.') => {
            Some(name.to_string())
        }
        None => None,
    };
    let chars: Vec<char> = filter.chars().collect();
    let mut i = 0;
    let mut depth: i32 = 0;
    let mut used = Vec::new();
    let mut tokens = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            ';' => return err("a row filter cannot contain ';' (it would end the statement)"),
            '#' => return err("a row filter cannot contain comments ('#')"),
            '-' if next == Some('-') => return err("a row filter cannot contain comments ('--')"),
            '/' if next == Some('*') => return err("a row filter cannot contain comments ('/*')"),
            '@' => return err("a row filter cannot use query parameters or system variables ('@')"),
            '.' if !next.is_some_and(|n| n.is_ascii_digit()) => {
                return err("a row filter cannot use dotted names (field or table paths); name a column of the source");
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return err("unbalanced ')': a row filter cannot close the parenthesis it is wrapped in");
                }
            }
            '\'' | '"' => {
                if chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c) {
                    return err("triple-quoted strings are not allowed in a row filter");
                }
                i = string_end(&chars, i, c)?;
                tokens += 1;
                continue;
            }
            '`' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&x| x == '`')
                    .map(|p| i + 1 + p)
                    .ok_or_else(|| FilterError("unterminated quoted identifier".into()))?;
                let name: String = chars[i + 1..end].iter().collect();
                if name.contains('\\') {
                    return err("escapes inside quoted identifiers are not allowed in a row filter");
                }
                match is_column(&name) {
                    Some(col) => used.push(col),
                    None => return err(format!("`{name}` is not a column of the source")),
                }
                i = end + 1;
                tokens += 1;
                continue;
            }
            c if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                tokens += 1;
                continue;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let upper = word.to_ascii_uppercase();
                // Raw / bytes string prefixes: r'..', b'..', rb'..'.
                if matches!(upper.as_str(), "R" | "B" | "RB" | "BR") && matches!(chars.get(i), Some('\'' | '"')) {
                    let q = chars[i];
                    i = string_end(&chars, i, q)?;
                    tokens += 1;
                    continue;
                }
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let is_call = chars.get(j) == Some(&'(');
                let allowed_call = is_call && FUNCTIONS.contains(&upper.as_str());
                if !allowed_call && RESERVED.contains(&upper.as_str()) && !KEYWORDS.contains(&upper.as_str()) {
                    return err(format!("SQL keyword {upper} is not allowed in a row filter"));
                }
                let column = if allowed_call { None } else { is_column(&word) };
                if let Some(col) = column {
                    if is_call {
                        return err(format!(
                            "{word}(…) calls a function named like a column; use the column without parentheses"
                        ));
                    }
                    used.push(col);
                } else if allowed_call || KEYWORDS.contains(&upper.as_str()) {
                    // An allowed function or keyword.
                } else if is_call {
                    return err(format!(
                        "function {word} is not allowed in a row filter (allowed: {})",
                        FUNCTIONS.join(", ")
                    ));
                } else {
                    return err(format!(
                        "{word:?} is neither a column of the source nor an allowed keyword"
                    ));
                }
                tokens += 1;
                continue;
            }
            '=' | '<' | '>' | '!' | '+' | '-' | '*' | '/' | '%' | ',' | '|' | '&' | '^' | '~' | '.' => {}
            other => return err(format!("character {other:?} is not allowed in a row filter")),
        }
        tokens += 1;
        i += 1;
    }
    if depth != 0 {
        return err("unbalanced '(' in the row filter");
    }
    if tokens == 0 {
        return err("the row filter is empty; remove rowFilter to keep every row");
    }
    used.sort();
    used.dedup();
    Ok(used)
}

/// The index just past the string literal starting at `start` (quote `q`), honouring `\` escapes.
fn string_end(chars: &[char], start: usize, q: char) -> Result<usize, FilterError> {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            c if c == q => return Ok(i + 1),
            '\n' => return err("a string in a row filter cannot span lines"),
            _ => i += 1,
        }
    }
    err("unterminated string literal in the row filter")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<String> {
        ["id", "amount", "country", "modify_time", "select"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn ordinary_filters_pass() {
        for f in [
            "amount > 0",
            "country IN ('FR', 'DE') AND amount BETWEEN 1 AND 1e6",
            "modify_time >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 30 DAY)",
            "LOWER(country) = 'fr' OR country IS NULL",
            "`select` = 'a;b -- not a comment'",
            "CAST(amount AS STRING) LIKE '1%'",
            "amount > .5",
        ] {
            assert!(check(f, Some(&cols())).is_ok(), "{f}: {:?}", check(f, Some(&cols())));
        }
        assert_eq!(check("Amount > 0 AND ID < 3", Some(&cols())).unwrap(), ["amount", "id"]);
    }

    #[test]
    fn injections_are_refused() {
        let cases = [
            ("amount > 0; DROP TABLE x", "';'"),
            ("amount > 0) OR (1=1", "unbalanced ')'"),
            ("amount > 0 -- ", "comments"),
            ("amount > 0 /* x */", "comments"),
            ("amount > 0 # x", "comments"),
            ("id IN (SELECT id FROM `p.d.t`)", "SQL keyword SELECT"),
            ("EXISTS(SELECT 1)", "SQL keyword EXISTS"),
            ("id = other.id", "\"other\" is neither a column"),
            ("id = amount.x", "dotted names"),
            ("`p.d.secret` IS NULL", "is not a column"),
            ("secret > 0", "\"secret\" is neither a column"),
            ("amount > @p", "'@'"),
            ("amount > 0 UNION ALL", "UNION"),
            ("country = 'unterminated", "unterminated"),
            ("(amount > 0", "unbalanced '('"),
            ("   ", "empty"),
            ("country = '''x'''", "triple-quoted"),
        ];
        // Without the source's columns, the structure is still enforced.
        assert!(check("anything > 0", None).is_ok());
        assert!(check("x > 0) OR (1=1", None).is_err());
        assert!(check("x IN (SELECT 1 FROM t)", None).is_err());
        for (f, want) in cases {
            let e = check(f, Some(&cols())).expect_err(f);
            assert!(e.0.contains(want), "{f}: {e}");
        }
    }
}
