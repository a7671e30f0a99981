//! The OData query options Reach understands on collections: `$filter`,
//! `$top`, `$skip`, `$orderby` and `$count`. This module parses them into a
//! small AST (`Query`); `store::sql::odata_to_sql` turns it into SQL with bound
//! parameters. It never evaluates queries itself and never builds SQL from
//! client text.
//!
//! `$filter` grammar (operators and functions are case-insensitive):
//! ```text
//! expr    = and ("or" and)*
//! and     = unary ("and" unary)*
//! unary   = "not" unary | "(" expr ")" | func | compare
//! func    = ("startswith" | "endswith" | "contains") "(" field "," literal ")"
//! compare = field ("eq"|"ne"|"gt"|"ge"|"lt"|"le") literal
//!         | field "in" "(" literal ("," literal)* ")"
//!         | field "/any(" var ":" var "eq" literal ")"
//! literal = 'text' ('' escapes a quote) | number | date-time | null | true | false
//! ```

mod filter;

pub use filter::parse_filter;

use crate::time::Micros;

/// Most nested parentheses and `not`s in one `$filter`.
pub const MAX_DEPTH: usize = 32;
/// Longest `$filter` accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 8192;
/// Largest `$top` (Defender's page limit).
pub const MAX_TOP: u32 = 10_000;
/// Most comparisons and functions in one `$filter` (SQL engines nest a
/// chain of `or`s one level per term; SQLite stops at 1,000).
pub const MAX_TERMS: usize = 100;
/// Most values in one `in (...)` list.
pub const MAX_IN_VALUES: usize = 200;
/// Most properties in `$orderby`.
pub const MAX_ORDER_BY: usize = 8;

/// A literal of a `$filter`.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `'text'` (`''` is a quote).
    Text(String),
    /// A whole number.
    Int(i64),
    /// A date-time (`2026-11-01T00:00:00Z`), as microseconds.
    DateTime(Micros),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `eq`
    Eq,
    /// `ne`
    Ne,
    /// `gt`
    Gt,
    /// `ge`
    Ge,
    /// `lt`
    Lt,
    /// `le`
    Le,
}

/// A text function of `$filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFunc {
    /// `startswith(field, 'text')`
    StartsWith,
    /// `endswith(field, 'text')`
    EndsWith,
    /// `contains(field, 'text')`
    Contains,
}

/// A parsed `$filter` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `a and b`
    And(Box<Expr>, Box<Expr>),
    /// `a or b`
    Or(Box<Expr>, Box<Expr>),
    /// `not a`
    Not(Box<Expr>),
    /// `field op value`
    Compare {
        /// The property's name, as written.
        field: String,
        /// How it compares.
        op: CompareOp,
        /// What it is compared with.
        value: Literal,
    },
    /// `field in (v1, v2, ...)`
    In {
        /// The property's name, as written.
        field: String,
        /// The values it may equal.
        values: Vec<Literal>,
    },
    /// `func(field, value)`
    Func {
        /// Which function.
        func: TextFunc,
        /// The property's name, as written.
        field: String,
        /// Its text argument.
        value: Literal,
    },
    /// `field/any(x: x eq value)`: a collection field contains the value.
    AnyEq {
        /// The collection property's name, as written.
        field: String,
        /// The value it must contain.
        value: Literal,
    },
    /// A collection field holds a value that starts with `prefix` (without
    /// case). Built by the API (`findbytag?useStartsWithFilter=true`); no
    /// `$filter` spelling parses to it.
    AnyStartsWith {
        /// The collection property's name.
        field: String,
        /// The start one of its values must have.
        prefix: String,
    },
}

/// One property of `$orderby`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    /// The property's name, as written.
    pub field: String,
    /// `desc` was given.
    pub descending: bool,
}

/// Parsed query options of one collection request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// `$filter`, when given.
    pub filter: Option<Expr>,
    /// `$orderby`, in order.
    pub order_by: Vec<OrderBy>,
    /// `$top`, when given (at most `MAX_TOP`).
    pub top: Option<u32>,
    /// `$skip` (0 when not given).
    pub skip: u32,
    /// `$count=true` was given.
    pub count: bool,
}

/// A malformed query; the message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ODataError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, ODataError> {
    Err(ODataError(message.into()))
}

impl Query {
    /// Narrows the filter to what also matches `expr` (the caller's
    /// filter, if any, and `expr`).
    pub fn and(&mut self, expr: Expr) {
        self.filter = Some(match self.filter.take() {
            Some(filter) => Expr::And(Box::new(filter), Box::new(expr)),
            None => expr,
        });
    }

    /// Parses a raw query string. `+` decodes as a space, as real clients expect.
    /// Option names are case-insensitive; parameters without `$` are ignored.
    pub fn parse(raw_query: Option<&str>) -> Result<Self, ODataError> {
        let mut query = Query::default();
        let Some(raw) = raw_query else {
            return Ok(query);
        };
        for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            match key.to_ascii_lowercase().as_str() {
                "$filter" => {
                    if value.len() > MAX_FILTER_LEN {
                        return err(format!(
                            "$filter is longer than {MAX_FILTER_LEN} characters"
                        ));
                    }
                    query.filter = Some(parse_filter(&value)?);
                }
                "$top" => {
                    let top: u32 = value.trim().parse().map_err(|_| {
                        ODataError(format!("$top must be a whole number, got '{value}'"))
                    })?;
                    if top > MAX_TOP {
                        return err(format!("$top must be at most {MAX_TOP}, got {top}"));
                    }
                    query.top = Some(top);
                }
                "$skip" => {
                    query.skip = value.trim().parse().map_err(|_| {
                        ODataError(format!("$skip must be a whole number, got '{value}'"))
                    })?;
                }
                "$count" => {
                    query.count = match value.trim().to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return err(format!("$count must be true or false, got '{value}'")),
                    };
                }
                "$orderby" => query.order_by = parse_order_by(&value)?,
                other if other.starts_with('$') => {
                    return err(format!(
                        "The query option '{key}' is not supported; use $filter, $top, $skip, $orderby or $count"
                    ));
                }
                _ => {}
            }
        }
        Ok(query)
    }
}

fn parse_order_by(text: &str) -> Result<Vec<OrderBy>, ODataError> {
    let mut out = Vec::new();
    if text.split(',').count() > MAX_ORDER_BY {
        return err(format!("$orderby takes at most {MAX_ORDER_BY} properties"));
    }
    for part in text.split(',') {
        let words: Vec<&str> = part.split_whitespace().collect();
        let (field, descending) = match words.as_slice() {
            [field] => (*field, false),
            [field, dir] if dir.eq_ignore_ascii_case("asc") => (*field, false),
            [field, dir] if dir.eq_ignore_ascii_case("desc") => (*field, true),
            _ => {
                return err(format!(
                    "$orderby expects 'property [asc|desc]' separated by commas, got '{}'",
                    part.trim()
                ));
            }
        };
        if !is_identifier(field) {
            return err(format!("$orderby: '{field}' is not a property name"));
        }
        out.push(OrderBy {
            field: field.to_string(),
            descending,
        });
    }
    Ok(out)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(field: &str, op: CompareOp, value: Literal) -> Expr {
        Expr::Compare {
            field: field.into(),
            op,
            value,
        }
    }

    #[test]
    fn parses_and_or_with_precedence_and_parentheses() {
        let e = parse_filter(
            "status eq 'Pending' or status eq 'InProgress' and type eq 'LiveResponse'",
        )
        .unwrap();
        let expected = Expr::Or(
            Box::new(cmp(
                "status",
                CompareOp::Eq,
                Literal::Text("Pending".into()),
            )),
            Box::new(Expr::And(
                Box::new(cmp(
                    "status",
                    CompareOp::Eq,
                    Literal::Text("InProgress".into()),
                )),
                Box::new(cmp(
                    "type",
                    CompareOp::Eq,
                    Literal::Text("LiveResponse".into()),
                )),
            )),
        );
        assert_eq!(e, expected);
        let e = parse_filter("(status eq 'a' OR status eq 'b') AND machineId ne 'x'").unwrap();
        assert!(matches!(e, Expr::And(..)));
    }

    #[test]
    fn parses_in_dates_functions_and_any() {
        assert_eq!(
            parse_filter("status in ('Pending','Failed')").unwrap(),
            Expr::In {
                field: "status".into(),
                values: vec![
                    Literal::Text("Pending".into()),
                    Literal::Text("Failed".into())
                ]
            }
        );
        assert_eq!(
            parse_filter("lastSeen gt 2018-08-01Z").unwrap(),
            cmp(
                "lastSeen",
                CompareOp::Gt,
                Literal::DateTime(Micros::parse("2018-08-01").unwrap())
            )
        );
        assert!(matches!(
            parse_filter("startswith(computerDnsName,'web')").unwrap(),
            Expr::Func {
                func: TextFunc::StartsWith,
                ..
            }
        ));
        assert_eq!(
            parse_filter("machineTags/any(t: t eq 'prod')").unwrap(),
            Expr::AnyEq {
                field: "machineTags".into(),
                value: Literal::Text("prod".into())
            }
        );
        assert_eq!(
            parse_filter("requestor eq 'O''Brien'").unwrap(),
            cmp("requestor", CompareOp::Eq, Literal::Text("O'Brien".into()))
        );
    }

    #[test]
    fn malformed_filters_name_the_problem() {
        for (filter, needle) in [
            ("status eq", "found the end"),
            ("status equals 'x'", "Unknown operator 'equals'"),
            ("status eq 'x", "Unterminated string"),
            ("(status eq 'x'", "')'"),
            ("status eq 'x' 'y'", "Unexpected string 'y'"),
            ("status eq Pending", "quote text values"),
            ("status eq 'x' ; drop", "Unexpected character ';'"),
            ("", "empty"),
        ] {
            let e = parse_filter(filter).unwrap_err();
            assert!(e.0.contains(needle), "{filter:?}: {e}");
        }
        let deep = format!("{}status eq 'x'{}", "(".repeat(40), ")".repeat(40));
        assert!(parse_filter(&deep).unwrap_err().0.contains("nested deeper"));
    }

    #[test]
    fn query_options_decode_plus_as_space() {
        let q = Query::parse(Some("$filter=machineId+eq+%27abc%27&$top=2&$skip=1&$count=true&$orderby=creationDateTimeUtc+asc")).unwrap();
        assert_eq!(
            q.filter,
            Some(cmp("machineId", CompareOp::Eq, Literal::Text("abc".into())))
        );
        assert_eq!((q.top, q.skip, q.count), (Some(2), 1, true));
        assert_eq!(
            q.order_by,
            vec![OrderBy {
                field: "creationDateTimeUtc".into(),
                descending: false
            }]
        );
        assert!(
            Query::parse(Some("$top=10001"))
                .unwrap_err()
                .0
                .contains("at most 10000")
        );
        assert!(Query::parse(Some("$top=-1")).is_err());
        assert!(
            Query::parse(Some("$expand=x"))
                .unwrap_err()
                .0
                .contains("not supported")
        );
        assert_eq!(
            Query::parse(Some("api-version=1")).unwrap(),
            Query::default()
        );
    }
}
