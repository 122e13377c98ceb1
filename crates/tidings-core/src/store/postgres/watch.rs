//! Table-change streams: a trigger on an application's table that publishes an event for each
//! insert and each qualifying update, through the outbox (so in the application's transaction,
//! durable, and not limited by NOTIFY's 8,000-byte payload).
//!
//! `watch` generates, for one table, a PL/pgSQL trigger function `<schema>.watch_<oid>()` and an
//! `AFTER INSERT OR UPDATE ... FOR EACH ROW` trigger `tidings_watch_<schema>` calling it, and
//! records the watch in `<schema>.watches`. Every identifier is quoted and every literal escaped
//! here; column names are checked against the table's catalogue first. The trigger never fails
//! the application's statement over the event's content: it only inserts into the outbox, and
//! the hub moves a row it cannot publish to `outbox_rejected`. It runs as the role that
//! installed it (`SECURITY DEFINER`, with a fixed search path), so the application's roles need
//! no rights on the log's schema.

use tokio_postgres::{Client, GenericClient};

use super::pg;
use crate::event::{EventType, Topic};
use crate::log::LogError;

/// Most columns an event's data can carry (`json_build_object` takes at most 100 arguments).
pub const MAX_COLUMNS: usize = 50;

/// What `tidings pg watch` installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    /// The table: `sessions` (looked up on `"$user", public`) or `app.sessions`.
    pub table: String,
    /// The topic, with `{column}` placeholders replaced by the row's values (NULL gives "").
    pub topic: String,
    /// The columns sent as the event's data, a JSON object in this order.
    pub columns: Vec<String>,
    /// An update publishes only when one of these changed; empty: every update publishes.
    pub when_changed: Vec<String>,
    /// The event type; none by default (so `EventSource.onmessage` sees the events).
    pub kind: Option<String>,
    pub private: bool,
}

/// An installed watch, as `tidings pg watches` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub table: String,
    pub topic: String,
    pub columns: Vec<String>,
    pub when_changed: Vec<String>,
    pub kind: Option<String>,
    pub private: bool,
}

fn invalid(msg: impl Into<String>) -> LogError {
    LogError::Invalid(msg.into())
}

/// `name` as a quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `s` as an SQL string literal (standard_conforming_strings is set for the installing
/// transaction).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The topic template as an SQL expression over `NEW`: literal parts and `{column}` values.
/// Returns the expression and the columns it uses.
fn topic_expression(template: &str) -> Result<(String, Vec<String>), LogError> {
    let mut parts = Vec::new();
    let mut used = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            Some(i) if rest.as_bytes()[i] == b'}' => {
                return Err(invalid(format!(
                    "--topic {template:?}: a '}}' without '{{'"
                )));
            }
            Some(i) => {
                let Some(close) = rest[i..].find('}') else {
                    return Err(invalid(format!(
                        "--topic {template:?}: a '{{' without '}}'"
                    )));
                };
                let column = &rest[i + 1..i + close];
                if column.is_empty() || column.contains('{') {
                    return Err(invalid(format!(
                        "--topic {template:?}: a placeholder must name one column, as {{id}}"
                    )));
                }
                if i > 0 {
                    parts.push(literal(&rest[..i]));
                }
                parts.push(format!("coalesce((NEW.{})::text, '')", ident(column)));
                used.push(column.to_owned());
                rest = &rest[i + close + 1..];
            }
            None => {
                parts.push(literal(rest));
                rest = "";
            }
        }
    }
    // The literal parts must be valid in a topic; placeholders are checked per row by the hub.
    let fixed: String = template.replace(['{', '}'], "");
    Topic::parse(if fixed.is_empty() { "x" } else { &fixed })
        .map_err(|e| invalid(format!("--topic {template:?}: {e}")))?;
    if parts.is_empty() {
        return Err(invalid("--topic is empty"));
    }
    Ok((parts.join(" || "), used))
}

/// The table's oid, `schema.table` display name and column names.
async fn resolve(
    client: &impl GenericClient,
    table: &str,
) -> Result<(u32, String, Vec<String>), LogError> {
    let row = client
        .query_opt(
            "SELECT c.oid, format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')",
            &[&table],
        )
        .await
        .map_err(pg)?
        .ok_or_else(|| invalid(format!("no table {table:?} (give it as schema.table)")))?;
    let oid: u32 = row.get(0);
    let columns = client
        .query(
            "SELECT attname::text FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok((oid, row.get(1), columns))
}

/// Run first in the installing transaction: a table name without a schema is looked up as an
/// application would (`"$user", public`), not in the log's schema; literals are standard.
const UNQUALIFIED: &str =
    "SET LOCAL search_path TO \"$user\", public; SET LOCAL standard_conforming_strings = on";

fn trigger_name(schema: &str) -> String {
    format!("tidings_watch_{schema}")
}

/// Installs (or replaces) the watch on `spec.table`; `schema` is the log's, already migrated.
/// Returns the table's qualified name.
pub async fn watch(
    client: &mut Client,
    schema: &str,
    spec: &WatchSpec,
) -> Result<String, LogError> {
    if spec.columns.is_empty() {
        return Err(invalid("--columns names no column"));
    }
    if spec.columns.len() > MAX_COLUMNS {
        return Err(invalid(format!(
            "--columns names more than {MAX_COLUMNS} columns"
        )));
    }
    if let Some(kind) = &spec.kind {
        EventType::parse(kind).map_err(|e| invalid(format!("--type: {e}")))?;
    }
    let (topic, in_topic) = topic_expression(&spec.topic)?;
    let tx = client.transaction().await.map_err(pg)?;
    tx.batch_execute(UNQUALIFIED).await.map_err(pg)?;
    let (oid, qualified, existing) = resolve(&tx, &spec.table).await?;
    for column in spec
        .columns
        .iter()
        .chain(&spec.when_changed)
        .chain(&in_topic)
    {
        if !existing.contains(column) {
            return Err(invalid(format!(
                "table {qualified} has no column {column:?} (it has: {})",
                existing.join(", ")
            )));
        }
    }
    let data = spec
        .columns
        .iter()
        .map(|c| format!("{}, NEW.{}", literal(c), ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let skip_unchanged = if spec.when_changed.is_empty() {
        String::new()
    } else {
        let changed = spec
            .when_changed
            .iter()
            .map(|c| format!("NEW.{0} IS DISTINCT FROM OLD.{0}", ident(c)))
            .collect::<Vec<_>>()
            .join(" OR ");
        format!("IF TG_OP = 'UPDATE' AND NOT ({changed}) THEN RETURN NULL; END IF;\n")
    };
    let kind = spec.kind.as_deref().map_or("NULL".to_owned(), literal);
    let function = format!("{schema}.watch_{oid}");
    tx.batch_execute(&format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql
         SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $tidings$
         BEGIN
         {skip_unchanged}
         INSERT INTO {schema}.outbox (topics, type, data, private)
             VALUES (ARRAY[{topic}], {kind}, json_build_object({data})::text, {private});
         RETURN NULL;
         END
         $tidings$;
         DROP TRIGGER IF EXISTS {trigger} ON {qualified};
         CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE ON {qualified}
             FOR EACH ROW EXECUTE FUNCTION {function}();",
        private = spec.private,
        trigger = trigger_name(schema),
    ))
    .await
    .map_err(pg)?;
    tx.execute(
        &format!(
            "INSERT INTO {schema}.watches (relid, table_name, topic, columns, when_changed, type, private) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (relid) DO UPDATE SET table_name = EXCLUDED.table_name, \
               topic = EXCLUDED.topic, columns = EXCLUDED.columns, \
               when_changed = EXCLUDED.when_changed, type = EXCLUDED.type, \
               private = EXCLUDED.private, installed_at = now()"
        ),
        &[
            &oid,
            &qualified,
            &spec.topic,
            &spec.columns,
            &spec.when_changed,
            &spec.kind,
            &spec.private,
        ],
    )
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok(qualified)
}

/// Removes the watch on `table`; `false` when there was none.
pub async fn unwatch(client: &mut Client, schema: &str, table: &str) -> Result<bool, LogError> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.batch_execute(UNQUALIFIED).await.map_err(pg)?;
    let (oid, qualified, _) = resolve(&tx, table).await?;
    let removed = tx
        .execute(
            &format!("DELETE FROM {schema}.watches WHERE relid = $1"),
            &[&oid],
        )
        .await
        .map_err(pg)?;
    tx.batch_execute(&format!(
        "DROP TRIGGER IF EXISTS {trigger} ON {qualified};
         DROP FUNCTION IF EXISTS {schema}.watch_{oid}();",
        trigger = trigger_name(schema),
    ))
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok(removed > 0)
}

/// The installed watches whose tables still exist.
pub async fn watches(client: &Client, schema: &str) -> Result<Vec<Watch>, LogError> {
    let rows = client
        .query(
            &format!(
                "SELECT format('%I.%I', n.nspname, c.relname), w.topic, w.columns, \
                        w.when_changed, w.type, w.private \
                 FROM {schema}.watches w JOIN pg_class c ON c.oid = w.relid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY 1"
            ),
            &[],
        )
        .await
        .map_err(pg)?;
    Ok(rows
        .iter()
        .map(|r| Watch {
            table: r.get(0),
            topic: r.get(1),
            columns: r.get(2),
            when_changed: r.get(3),
            kind: r.get(4),
            private: r.get(5),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_templates_become_quoted_expressions() {
        let (expr, used) = topic_expression("sessions/{session_id}").unwrap();
        assert_eq!(
            expr,
            "'sessions/' || coalesce((NEW.\"session_id\")::text, '')"
        );
        assert_eq!(used, ["session_id"]);
        let (expr, _) = topic_expression("it's/{a\"b}/x").unwrap();
        assert_eq!(
            expr,
            "'it''s/' || coalesce((NEW.\"a\"\"b\")::text, '') || '/x'"
        );
        assert_eq!(topic_expression("fixed").unwrap().0, "'fixed'");
        for bad in ["a/{", "a/}", "a/{}", "a/{{b}}", "", "a\nb/{x}"] {
            assert!(topic_expression(bad).is_err(), "{bad:?} accepted");
        }
    }
}
