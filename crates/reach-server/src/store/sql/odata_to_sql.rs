//! Turns an OData `Query` into a SQL `WHERE`/`ORDER BY`/`LIMIT` tail with
//! bound parameters, for any SQL store. Properties map to column expressions
//! through a per-entity table of `Field`s; client text only ever becomes a
//! bound parameter, never SQL.
//!
//! Text comparisons are case-insensitive (`lower(a) = lower(b)`), as
//! Defender's are.

use super::Engine;
use crate::odata::{CompareOp, Expr, Literal, ODataError, Query, TextFunc};

/// How a property is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text, compared without case.
    Text,
    /// Microseconds since the epoch.
    Time,
    /// A JSON array of text.
    TextList,
    /// A whole number.
    Int,
}

/// One filterable, sortable property of an entity.
#[derive(Debug, Clone)]
pub struct Field {
    /// OData property name (matched case-insensitively).
    pub name: &'static str,
    /// SQL expression of its value.
    pub sql: String,
    /// How its value is stored.
    pub kind: Kind,
}

impl Field {
    /// A property named `name` whose value is the SQL expression `sql`.
    pub fn new(name: &'static str, sql: impl Into<String>, kind: Kind) -> Self {
        Self {
            name,
            sql: sql.into(),
            kind,
        }
    }
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    /// Bound as text.
    Text(String),
    /// Bound as a whole number.
    Int(i64),
}

/// A query's SQL, ready to append after `FROM ... WHERE tenant = $1`.
pub struct Compiled {
    /// `WHERE ...` (empty when no filter).
    pub where_sql: String,
    /// `ORDER BY ...` (always present; `default_order` when none requested).
    pub order_sql: String,
    /// The values of its placeholders, in order.
    pub binds: Vec<Bind>,
}

struct Builder<'a> {
    fields: &'a [Field],
    engine: Engine,
    binds: Vec<Bind>,
    first_param: usize,
}

impl Builder<'_> {
    fn field(&self, name: &str) -> Result<&Field, ODataError> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let known: Vec<&str> = self.fields.iter().map(|f| f.name).collect();
                ODataError(format!(
                    "Unknown property '{name}'; filterable properties are {}",
                    known.join(", ")
                ))
            })
    }

    fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        // `$n` placeholders: PostgreSQL's, and SQLite reads them the same way.
        format!("${}", self.first_param + self.binds.len() - 1)
    }

    fn value(&mut self, field: &Field, literal: &Literal) -> Result<String, ODataError> {
        match (field.kind, literal) {
            (Kind::Text | Kind::TextList, Literal::Text(t)) => {
                let p = self.bind(Bind::Text(t.clone()));
                Ok(format!("lower({p})"))
            }
            (Kind::Text | Kind::TextList, Literal::Int(n)) => Err(ODataError(format!(
                "{} holds text; quote the value: '{n}'",
                field.name
            ))),
            (Kind::Int, Literal::Int(n)) => Ok(self.bind(Bind::Int(*n))),
            (Kind::Time, Literal::DateTime(t)) => Ok(self.bind(Bind::Int(t.0))),
            (Kind::Time, Literal::Text(t)) => match crate::time::Micros::parse(t) {
                Some(t) => Ok(self.bind(Bind::Int(t.0))),
                None => Err(ODataError(format!(
                    "'{t}' is not a date-time, as {} needs",
                    field.name
                ))),
            },
            (_, other) => Err(ODataError(format!(
                "{} cannot be compared with {other:?}",
                field.name
            ))),
        }
    }

    fn column(field: &Field) -> String {
        match field.kind {
            Kind::Text | Kind::TextList => format!("lower({})", field.sql),
            Kind::Time | Kind::Int => field.sql.clone(),
        }
    }

    fn expr(&mut self, expr: &Expr) -> Result<String, ODataError> {
        Ok(match expr {
            Expr::And(a, b) => format!("({} AND {})", self.expr(a)?, self.expr(b)?),
            Expr::Or(a, b) => format!("({} OR {})", self.expr(a)?, self.expr(b)?),
            Expr::Not(a) => format!("(NOT {})", self.expr(a)?),
            Expr::Compare { field, op, value } => {
                let field = self.field(field)?.clone();
                if field.kind == Kind::TextList {
                    return match op {
                        CompareOp::Eq => self.contains(&field, std::slice::from_ref(value)),
                        CompareOp::Ne => Ok(format!(
                            "(NOT {})",
                            self.contains(&field, std::slice::from_ref(value))?
                        )),
                        _ => Err(ODataError(format!(
                            "{} is a collection; use eq, ne or {}/any(t: t eq 'value')",
                            field.name, field.name
                        ))),
                    };
                }
                let column = Self::column(&field);
                if *value == Literal::Null {
                    return match op {
                        CompareOp::Eq => Ok(format!("({} IS NULL)", field.sql)),
                        CompareOp::Ne => Ok(format!("({} IS NOT NULL)", field.sql)),
                        _ => Err(ODataError("null can only be compared with eq or ne".into())),
                    };
                }
                let value = self.value(&field, value)?;
                let op = match op {
                    CompareOp::Eq => "=",
                    CompareOp::Ne => "<>",
                    CompareOp::Gt => ">",
                    CompareOp::Ge => ">=",
                    CompareOp::Lt => "<",
                    CompareOp::Le => "<=",
                };
                format!("({column} {op} {value})")
            }
            Expr::In { field, values } => {
                let field = self.field(field)?.clone();
                if field.kind == Kind::TextList {
                    return self.contains(&field, values);
                }
                let column = Self::column(&field);
                let values = values
                    .iter()
                    .map(|v| self.value(&field, v))
                    .collect::<Result<Vec<_>, _>>()?;
                format!("({column} IN ({}))", values.join(", "))
            }
            Expr::Func { func, field, value } => {
                let field = self.field(field)?.clone();
                let Literal::Text(text) = value else {
                    return Err(ODataError("text functions take a quoted text value".into()));
                };
                if field.kind != Kind::Text {
                    return Err(ODataError(format!("{} is not a text property", field.name)));
                }
                let escaped = like_escaped(text);
                let pattern = match func {
                    TextFunc::StartsWith => format!("{escaped}%"),
                    TextFunc::EndsWith => format!("%{escaped}"),
                    TextFunc::Contains => format!("%{escaped}%"),
                };
                let p = self.bind(Bind::Text(pattern));
                format!("({} LIKE lower({p}) ESCAPE '\\')", Self::column(&field))
            }
            Expr::AnyEq { field, value } => {
                let field = self.field(field)?.clone();
                if field.kind != Kind::TextList {
                    return Err(ODataError(format!("{} is not a collection", field.name)));
                }
                self.contains(&field, std::slice::from_ref(value))?
            }
            Expr::AnyStartsWith { field, prefix } => {
                let field = self.field(field)?.clone();
                if field.kind != Kind::TextList {
                    return Err(ODataError(format!("{} is not a collection", field.name)));
                }
                let p = self.bind(Bind::Text(format!("{}%", like_escaped(prefix))));
                self.any_element(&field, &format!("LIKE lower({p}) ESCAPE '\\'"))
            }
        })
    }

    /// Whether the list in `field` holds any of `values` (without case):
    /// one EXISTS over one flat IN list, however many values.
    fn contains(&mut self, field: &Field, values: &[Literal]) -> Result<String, ODataError> {
        let mut placeholders = Vec::with_capacity(values.len());
        for value in values {
            let Literal::Text(text) = value else {
                return Err(ODataError(format!("{} holds text values", field.name)));
            };
            placeholders.push(format!("lower({})", self.bind(Bind::Text(text.clone()))));
        }
        let list = placeholders.join(", ");
        Ok(self.any_element(field, &format!("IN ({list})")))
    }

    /// Whether some element of the list in `field`, lower-cased, satisfies
    /// `test` (the rest of a SQL condition: `IN (...)`, `LIKE ...`).
    fn any_element(&self, field: &Field, test: &str) -> String {
        match self.engine {
            Engine::Sqlite => format!(
                "EXISTS (SELECT 1 FROM json_each({}) WHERE lower(json_each.value) {test})",
                field.sql
            ),
            Engine::Postgres => format!(
                "EXISTS (SELECT 1 FROM jsonb_array_elements_text({}::jsonb) AS tag WHERE lower(tag) {test})",
                field.sql
            ),
        }
    }
}

/// `text` with LIKE's wildcards and escape character escaped.
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Compiles `query` for the entity described by `fields`. `first_param` is the
/// number of the first placeholder (`$1` when the filter comes first).
pub fn compile(
    query: &Query,
    fields: &[Field],
    default_order: &str,
    engine: Engine,
    first_param: usize,
) -> Result<Compiled, ODataError> {
    let mut builder = Builder {
        fields,
        engine,
        binds: Vec::new(),
        first_param,
    };
    let where_sql = match &query.filter {
        Some(expr) => builder.expr(expr)?,
        None => String::new(),
    };
    let mut order = Vec::new();
    for item in &query.order_by {
        let field = builder.field(&item.field)?;
        let dir = if item.descending { "DESC" } else { "ASC" };
        order.push(format!("{} {dir}", field.sql));
    }
    order.push(default_order.to_string());
    Ok(Compiled {
        where_sql,
        order_sql: format!("ORDER BY {}", order.join(", ")),
        binds: builder.binds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odata::parse_filter;

    fn fields() -> Vec<Field> {
        vec![
            Field::new("status", "a.status", Kind::Text),
            Field::new("creationDateTimeUtc", "a.created_us", Kind::Time),
            Field::new("machineTags", "m.tags", Kind::TextList),
        ]
    }

    fn where_of(filter: &str, engine: Engine) -> (String, Vec<Bind>) {
        let query = Query {
            filter: Some(parse_filter(filter).unwrap()),
            ..Query::default()
        };
        let c = compile(&query, &fields(), "a.seq DESC", engine, 3).unwrap();
        (c.where_sql, c.binds)
    }

    #[test]
    fn client_text_is_always_bound() {
        let (sql, binds) = where_of("Status eq 'x'' OR 1=1 --'", Engine::Sqlite);
        assert_eq!(sql, "(lower(a.status) = lower($3))");
        assert_eq!(binds, vec![Bind::Text("x' OR 1=1 --".into())]);
        let (sql, _) = where_of(
            "status in ('a','b') and creationDateTimeUtc ge 2024-01-01Z",
            Engine::Postgres,
        );
        assert_eq!(
            sql,
            "((lower(a.status) IN (lower($3), lower($4))) AND (a.created_us >= $5))"
        );
    }

    #[test]
    fn unknown_properties_and_type_mismatches_are_odata_errors() {
        let query = Query {
            filter: Some(parse_filter("color eq 'red'").unwrap()),
            ..Query::default()
        };
        let e = compile(&query, &fields(), "x", Engine::Sqlite, 1)
            .err()
            .unwrap();
        assert!(e.0.contains("Unknown property 'color'"), "{e}");
        let query = Query {
            filter: Some(parse_filter("creationDateTimeUtc gt 'soon'").unwrap()),
            ..Query::default()
        };
        assert!(compile(&query, &fields(), "x", Engine::Sqlite, 1).is_err());
    }
}
