//! Metering reports, from the database, while mqgate runs or not: rows of a
//! window, the ids, and the counts, as a table, CSV or JSON. The CLI
//! (`mqgate report`) and the API (`DescribeMeteringReport`) read their
//! grouping with the one [`GroupBy`] parser.
//!
//! Calls are counted from the tables and from the bill journal's blocks
//! not folded into them yet ([`super::journal`]), in one snapshot, so a
//! report is exact while mqgate runs, and after it was killed before it
//! could fold.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, params_from_iter, types::Value as SqlValue};
use serde::Serialize;
use std::path::Path;

/// What to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Billed API calls (`api_transactions`).
    Transactions,
    /// Messages published and delivered, by QoS (`broker_messages`).
    Messages,
    /// Peak concurrent connections (`broker_connections`).
    Connections,
}

/// Time buckets of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// One window: the whole requested range.
    Whole,
    Minute,
    Hour,
    Day,
}

impl Bucket {
    fn seconds(self) -> Option<i64> {
        match self {
            Bucket::Whole => None,
            Bucket::Minute => Some(60),
            Bucket::Hour => Some(3600),
            Bucket::Day => Some(86_400),
        }
    }
}

/// How a report's rows are grouped: by instance, by action, and by a unit
/// of time (or one window over the whole range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub instance: bool,
    pub action: bool,
    pub bucket: Bucket,
}

impl GroupBy {
    /// Every word [`GroupBy::parse`] knows.
    pub const ALL: &'static [&'static str] = &["instance", "action", "minute", "hour", "day"];

    /// Parses `instance,action,hour`-style text: comma-separated words of
    /// `allowed` (a subset of [`GroupBy::ALL`]); the last time unit wins.
    /// The error says which word is wrong and which are allowed.
    pub fn parse(text: &str, allowed: &[&str]) -> Result<GroupBy, GroupByError> {
        let mut group_by = GroupBy {
            instance: false,
            action: false,
            bucket: Bucket::Whole,
        };
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let refused = || GroupByError {
                word: word.to_string(),
                allowed: allowed.iter().map(|a| a.to_string()).collect(),
            };
            if !allowed.contains(&word) {
                return Err(refused());
            }
            match word {
                "instance" => group_by.instance = true,
                "action" => group_by.action = true,
                "minute" => group_by.bucket = Bucket::Minute,
                "hour" => group_by.bucket = Bucket::Hour,
                "day" => group_by.bucket = Bucket::Day,
                _ => return Err(refused()),
            }
        }
        Ok(group_by)
    }
}

/// A word [`GroupBy::parse`] does not take here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupByError {
    pub word: String,
    pub allowed: Vec<String>,
}

impl std::fmt::Display for GroupByError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let choices = match self.allowed.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => "nothing".to_string(),
        };
        write!(f, "\"{}\" is not {choices}", self.word)
    }
}

impl std::error::Error for GroupByError {}

/// A time [`parse_time`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "\"{0}\" is not a time; use 2026-11-21, 2026-11-21T10:00:00Z, today, yesterday or now (UTC)"
)]
pub struct TimeError(pub String);

/// Which rows, and how to group them.
#[derive(Debug, Clone)]
pub struct Query {
    pub kind: Kind,
    /// Inclusive.
    pub from: DateTime<Utc>,
    /// Exclusive.
    pub to: DateTime<Utc>,
    pub account_id: Option<String>,
    pub instance_id: Option<String>,
    pub group_by: GroupBy,
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "{path}: no metering database (mqgate creates it when it starts with this storage.dir)"
    )]
    NoDatabase { path: String },
    #[error("{path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("the metering database could not be read: {0}")]
    Query(#[from] rusqlite::Error),
    #[error("the report's end (--to) must be after its start (--from)")]
    EmptyRange,
    #[error("{path}: cannot read the bill journal: {source}")]
    Journal {
        path: String,
        source: std::io::Error,
    },
    #[error("the bill journal was folded {0} times while this report read it; try again")]
    Busy(u32),
}

/// One row of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub window_start: String,
    pub window_end: String,
    pub account_id: String,
    /// Empty when not grouped by instance.
    pub instance_id: String,
    /// The action (transactions), `published/qos1`-style (messages), or
    /// empty.
    pub item: String,
    pub count: u64,
}

/// Parses `2026-11-21`, `2026-11-21T10:00:00Z` (any RFC 3339), `today`,
/// `yesterday`, `now`.
pub fn parse_time(value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, TimeError> {
    let today = now.date_naive();
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let parsed = match value {
        "now" => Some(now),
        "today" => midnight(today),
        "yesterday" => today.pred_opt().and_then(midnight),
        "tomorrow" => today.succ_opt().and_then(midnight),
        other => DateTime::parse_from_rfc3339(other)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                NaiveDate::parse_from_str(other, "%Y-%m-%d")
                    .ok()
                    .and_then(midnight)
            }),
    };
    parsed.ok_or_else(|| TimeError(value.to_string()))
}

/// Opens the database for reading (it may be in use by a running mqgate),
/// with the journal's calls not folded yet beside its tables: the
/// connection is left in a read transaction whose snapshot matches them.
pub fn open_read_only(path: &Path) -> Result<Connection, ReportError> {
    let display = || path.display().to_string();
    if !path.exists() {
        return Err(ReportError::NoDatabase { path: display() });
    }
    let open = || -> rusqlite::Result<Connection> {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(connection)
    };
    let connection = open().map_err(|source| ReportError::Open {
        path: display(),
        source,
    })?;
    let journal = path.with_file_name(super::journal::FILE);
    let fresh = open().map_err(|source| ReportError::Open {
        path: display(),
        source,
    })?;
    include_unfolded(&connection, &fresh, &journal)?;
    Ok(connection)
}

/// How many times a report tries for a snapshot no fold ran across.
const SNAPSHOT_TRIES: u32 = 20;

/// Fills `temp.unfolded_transactions` with the calls of the journal's
/// blocks past the tables' last fold, in a read transaction left open on
/// `connection`. A fold that commits between the snapshot and the end of
/// reading the journal (seen through `fresh`, outside the snapshot) may
/// have started the journal again: then it tries again.
fn include_unfolded(
    connection: &Connection,
    fresh: &Connection,
    journal: &Path,
) -> Result<(), ReportError> {
    connection.execute_batch(
        "CREATE TEMP TABLE unfolded_transactions (
             minute INTEGER NOT NULL,
             account_id TEXT NOT NULL,
             instance_id TEXT NOT NULL,
             action TEXT NOT NULL,
             transactions INTEGER NOT NULL
         )",
    )?;
    for _ in 0..SNAPSHOT_TRIES {
        connection.execute_batch("BEGIN")?;
        let folded = folded_sequence(connection)?;
        let blocks = super::journal::read(journal).map_err(|source| ReportError::Journal {
            path: journal.display().to_string(),
            source,
        })?;
        if folded_sequence(fresh)? != folded {
            connection.execute_batch("ROLLBACK")?;
            continue;
        }
        let mut insert = connection
            .prepare("INSERT INTO temp.unfolded_transactions VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for block in blocks.iter().filter(|b| b.sequence > folded) {
            for e in &block.entries {
                insert.execute(rusqlite::params![
                    e.minute,
                    e.account_id,
                    e.instance_id,
                    e.action,
                    e.calls as i64
                ])?;
            }
        }
        return Ok(());
    }
    Err(ReportError::Busy(SNAPSHOT_TRIES))
}

/// The last journal block in the tables (0 for a database older than the
/// journal, or new).
fn folded_sequence(connection: &Connection) -> rusqlite::Result<u64> {
    let has_table: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM main.sqlite_master WHERE name = 'bill_journal')",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    connection
        .query_row(
            "SELECT folded_sequence FROM main.bill_journal WHERE id = 1",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map(|n| n.max(0) as u64)
}

/// One minute's billed calls of one account, instance and action: what a
/// node tells its cluster (`cluster::bill`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCalls {
    /// The minute's first second, unix time.
    pub minute: i64,
    pub account_id: String,
    pub instance_id: String,
    pub action: String,
    pub calls: u64,
}

/// The billed calls of every minute from `since` (unix time, inclusive)
/// on, from a connection of [`open_read_only`] (the journal's calls not
/// folded yet included).
pub fn minute_calls(connection: &Connection, since: i64) -> Result<Vec<MinuteCalls>, ReportError> {
    let mut statement = connection.prepare(
        "SELECT minute, account_id, instance_id, action, SUM(transactions) FROM
           (SELECT minute, account_id, instance_id, action, transactions FROM main.api_transactions
            UNION ALL
            SELECT minute, account_id, instance_id, action, transactions FROM temp.unfolded_transactions)
         WHERE minute >= ?1 GROUP BY minute, account_id, instance_id, action",
    )?;
    let rows = statement.query_map([since], |row| {
        Ok(MinuteCalls {
            minute: row.get(0)?,
            account_id: row.get(1)?,
            instance_id: row.get(2)?,
            action: row.get(3)?,
            calls: row.get::<_, i64>(4)?.max(0) as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Adds calls billed elsewhere (the other nodes of a cluster) to what
/// [`run`] counts on this connection.
pub fn include_calls(connection: &Connection, calls: &[MinuteCalls]) -> Result<(), ReportError> {
    let mut insert =
        connection.prepare("INSERT INTO temp.unfolded_transactions VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for c in calls {
        insert.execute(rusqlite::params![
            c.minute,
            c.account_id,
            c.instance_id,
            c.action,
            c.calls as i64
        ])?;
    }
    Ok(())
}

/// Runs a report query.
pub fn run(connection: &Connection, query: &Query) -> Result<Vec<Row>, ReportError> {
    if query.to <= query.from {
        return Err(ReportError::EmptyRange);
    }
    let (table, item, value, aggregate) = match query.kind {
        // The tables' calls and the journal's not folded yet.
        Kind::Transactions => (
            "(SELECT minute, account_id, instance_id, action, transactions FROM main.api_transactions
              UNION ALL
              SELECT minute, account_id, instance_id, action, transactions FROM temp.unfolded_transactions)",
            "action",
            "transactions",
            "SUM",
        ),
        Kind::Messages => (
            "broker_messages",
            "direction || '/qos' || qos",
            "messages",
            "SUM",
        ),
        Kind::Connections => ("broker_connections", "''", "peak_connections", "MAX"),
    };
    let window = match query.group_by.bucket.seconds() {
        Some(s) => format!("(minute - (minute % {s}))"),
        None => "0".to_string(),
    };
    let instance = if query.group_by.instance {
        "instance_id"
    } else {
        "''"
    };
    let item = if query.group_by.action || query.kind == Kind::Messages {
        item
    } else {
        "''"
    };
    let mut sql = format!(
        "SELECT {window} AS w, account_id, {instance} AS i, {item} AS it, {aggregate}({value})
         FROM {table} WHERE minute >= ?1 AND minute < ?2"
    );
    let mut args: Vec<SqlValue> = vec![
        SqlValue::Integer(query.from.timestamp().div_euclid(60) * 60),
        SqlValue::Integer(query.to.timestamp()),
    ];
    if let Some(account) = &query.account_id {
        sql.push_str(&format!(" AND account_id = ?{}", args.len() + 1));
        args.push(SqlValue::Text(account.clone()));
    }
    if let Some(instance_id) = &query.instance_id {
        sql.push_str(&format!(" AND instance_id = ?{}", args.len() + 1));
        args.push(SqlValue::Text(instance_id.clone()));
    }
    sql.push_str(" GROUP BY w, account_id, i, it ORDER BY w, account_id, i, it");
    let mut statement = connection.prepare(&sql)?;
    let rows = statement.query_map(params_from_iter(args.iter()), |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, i64>(4)?,
        ))
    })?;
    let iso = |t: i64| {
        DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    };
    let mut out = Vec::new();
    for row in rows {
        let (window, account_id, instance_id, item, count) = row?;
        let (start, end) = match query.group_by.bucket.seconds() {
            Some(s) => (iso(window), iso(window + s)),
            None => (iso(query.from.timestamp()), iso(query.to.timestamp())),
        };
        out.push(Row {
            window_start: start,
            window_end: end,
            account_id,
            instance_id,
            item,
            count: count.max(0) as u64,
        });
    }
    Ok(out)
}

/// Column names for a kind.
fn headers(kind: Kind) -> [&'static str; 6] {
    let (item, count) = match kind {
        Kind::Transactions => ("action", "transactions"),
        Kind::Messages => ("direction_qos", "messages"),
        Kind::Connections => ("_", "peak_connections"),
    };
    [
        "window_start",
        "window_end",
        "account_id",
        "instance_id",
        item,
        count,
    ]
}

fn cells(row: &Row) -> [String; 6] {
    [
        row.window_start.clone(),
        row.window_end.clone(),
        row.account_id.clone(),
        row.instance_id.clone(),
        row.item.clone(),
        row.count.to_string(),
    ]
}

/// CSV (RFC 4180): a header line, then one line per row.
pub fn to_csv(kind: Kind, rows: &[Row]) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = headers(kind).join(",");
    out.push_str("\r\n");
    for row in rows {
        let line: Vec<String> = cells(row).iter().map(|c| quote(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A JSON array of objects named by the columns.
pub fn to_json(kind: Kind, rows: &[Row]) -> String {
    let names = headers(kind);
    let array: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let mut object = serde_json::Map::new();
            for (name, cell) in names.iter().zip(cells(row)) {
                let value = if *name == names[5] {
                    serde_json::Value::from(row.count)
                } else {
                    serde_json::Value::from(cell)
                };
                object.insert(name.to_string(), value);
            }
            serde_json::Value::Object(object)
        })
        .collect();
    serde_json::to_string_pretty(&array).unwrap_or_default() + "\n"
}

/// An aligned text table.
pub fn to_table(kind: Kind, rows: &[Row]) -> String {
    let names = headers(kind);
    let body: Vec<[String; 6]> = rows.iter().map(cells).collect();
    let mut widths = names.map(str::len);
    for row in &body {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(names.iter().map(|s| s.to_string()).collect());
    for row in body {
        out.push_str(&line(row.to_vec()));
    }
    if rows.is_empty() {
        out.push_str("(no rows in this window)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::{BrokerCounts, Meter};
    use chrono::TimeZone;

    #[test]
    fn times_read_as_users_write_them() {
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 10, 30, 0).unwrap();
        assert_eq!(
            parse_time("yesterday", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap()
        );
        assert_eq!(
            parse_time("2026-11-01", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            parse_time("2026-11-01T08:00:00+08:00", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
        );
        assert!(
            parse_time("last week", now)
                .unwrap_err()
                .to_string()
                .contains("yesterday")
        );
    }

    #[test]
    fn group_by_reads_the_allowed_words_and_names_a_wrong_one() {
        let g = GroupBy::parse("instance, action,hour,,day", GroupBy::ALL).unwrap();
        assert_eq!(
            g,
            GroupBy {
                instance: true,
                action: true,
                bucket: Bucket::Day
            }
        );
        assert_eq!(
            GroupBy::parse("", GroupBy::ALL).unwrap().bucket,
            Bucket::Whole
        );
        assert_eq!(
            GroupBy::parse("week", GroupBy::ALL)
                .unwrap_err()
                .to_string(),
            "\"week\" is not instance, action, minute, hour or day"
        );
        assert_eq!(
            GroupBy::parse("instance", &["action", "hour", "day"])
                .unwrap_err()
                .to_string(),
            "\"instance\" is not action, hour or day"
        );
    }

    #[test]
    fn csv_quotes_what_it_must() {
        let rows = vec![Row {
            window_start: "a".into(),
            window_end: "b".into(),
            account_id: "1".into(),
            instance_id: "i,\"x\"".into(),
            item: "QuerySessionByClientId".into(),
            count: 3,
        }];
        assert_eq!(
            to_csv(Kind::Transactions, &rows),
            "window_start,window_end,account_id,instance_id,action,transactions\r\na,b,1,\"i,\"\"x\"\"\",QuerySessionByClientId,3\r\n"
        );
    }

    /// Rows land in the windows their minutes belong to: a call at 09:59 is
    /// in the 09:00 hour, one at 10:00 in the 10:00 hour; `--to` is exclusive.
    #[tokio::test]
    async fn windows_have_exact_edges() {
        let dir = tempfile::tempdir().unwrap();
        let meter = Meter::open(dir.path()).unwrap();
        let at = |h: u32, m: u32| {
            Utc.with_ymd_and_hms(2026, 11, 21, h, m, 0)
                .unwrap()
                .timestamp()
        };
        let connection = Connection::open(meter.path()).unwrap();
        for (minute, action, n) in [
            (at(9, 59), "QuerySessionByClientId", 2),
            (at(10, 0), "QuerySessionByClientId", 5),
            (at(10, 0), "CloseConnection", 1),
            (at(23, 59), "QuerySessionByClientId", 7),
        ] {
            connection
                .execute(
                    "INSERT INTO api_transactions VALUES (?1, 'acct', 'inst', ?2, ?3)",
                    rusqlite::params![minute, action, n],
                )
                .unwrap();
        }
        meter
            .record_broker(
                BrokerCounts {
                    account_id: "acct".into(),
                    instance_id: "inst".into(),
                    minute: at(10, 0),
                    published: [3, 1, 0],
                    delivered: [6, 2, 0],
                    peak_connections: 4,
                },
                true,
            )
            .await
            .unwrap();
        let read = open_read_only(meter.path()).unwrap();
        let query = |from: DateTime<Utc>, to: DateTime<Utc>, bucket, action| Query {
            kind: Kind::Transactions,
            from,
            to,
            account_id: None,
            instance_id: None,
            group_by: GroupBy {
                instance: true,
                action,
                bucket,
            },
        };
        let day = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
        let next = Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap();
        let rows = run(&read, &query(day, next, Bucket::Hour, false)).unwrap();
        let counts: Vec<(&str, u64)> = rows
            .iter()
            .map(|r| (r.window_start.as_str(), r.count))
            .collect();
        assert_eq!(
            counts,
            [
                ("2026-11-21T09:00:00Z", 2),
                ("2026-11-21T10:00:00Z", 6),
                ("2026-11-21T23:00:00Z", 7)
            ]
        );
        let ten = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap();
        let rows = run(&read, &query(day, ten, Bucket::Whole, false)).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].count, rows[0].window_end.as_str()),
            (2, "2026-11-21T10:00:00Z")
        );
        let rows = run(&read, &query(ten, next, Bucket::Day, true)).unwrap();
        let items: Vec<(&str, u64)> = rows.iter().map(|r| (r.item.as_str(), r.count)).collect();
        assert_eq!(
            items,
            [("CloseConnection", 1), ("QuerySessionByClientId", 12)]
        );
        let messages = run(
            &read,
            &Query {
                kind: Kind::Messages,
                ..query(day, next, Bucket::Whole, false)
            },
        )
        .unwrap();
        let items: Vec<(&str, u64)> = messages
            .iter()
            .map(|r| (r.item.as_str(), r.count))
            .collect();
        assert_eq!(
            items,
            [
                ("delivered/qos0", 6),
                ("delivered/qos1", 2),
                ("published/qos0", 3),
                ("published/qos1", 1)
            ]
        );
        let peaks = run(
            &read,
            &Query {
                kind: Kind::Connections,
                ..query(day, next, Bucket::Whole, false)
            },
        )
        .unwrap();
        assert_eq!(peaks[0].count, 4);
        assert!(run(&read, &query(next, day, Bucket::Whole, false)).is_err());
    }
}
