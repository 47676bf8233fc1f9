//! The CSV form of the expert registry: one expert per row, for spreadsheets kept by a
//! hospital's medical affairs office (医务处). The CLI reads the file and calls [`parse_csv`];
//! every problem is reported together, each with its line and column.
//!
//! RFC 4180 quoting (`"…"`, `""` for a quote, line breaks inside quotes), a UTF-8 BOM is
//! skipped, blank lines are skipped. The first row names the columns (any order, case and
//! surrounding spaces ignored; an unknown column is an error):
//!
//! | column | required | content |
//! |---|---|---|
//! | `id`, `name`, `facility` | yes | text |
//! | `departments` | yes | codes separated by `;` |
//! | `title` | yes | 主任医师 … or chief … |
//! | `independent_practice_since` | yes | `YYYY-MM-DD` |
//! | `licence_verified`, `registration_active` | yes | `true`/`false`, `yes`/`no`, `1`/`0`, `是`/`否` |
//! | `expertise` | no | ICD-10 codes separated by `;` |
//! | `multi_site_filings`, `languages` | no | separated by `;` |
//! | `schedule` | no | `mon-fri 08:00-12:00; sat 20:00-08:00` |
//! | `on_call` | no | boolean |
//! | `last_heartbeat` | no | RFC 3339 (`2026-01-15T08:00:00Z`) |
//! | `open_consultations`, `sessions_today`, `median_accept_seconds`, `response_count` | no | whole numbers |
//! | `acceptance_rate` | no | 0 to 1 |
//!
//! An empty optional cell means "not given" (runtime state defaults to none or zero).

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

use super::icd::IcdCode;
use super::model::{
    ClockTime, Days, Expert, Load, Presence, ResponseHistory, Schedule, Title, WeeklyWindow,
};

/// One problem in a CSV file: where (line, and column when it is about a cell) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportProblem {
    /// 1-based line in the file (where the cell or record starts).
    pub line: usize,
    /// 1-based column number and its header name, when the problem is about one cell.
    pub column: Option<(usize, String)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ImportProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some((n, name)) => write!(
                f,
                "line {}, column {n} ({name}): {}",
                self.line, self.message
            ),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// Why a CSV file was not imported: every problem found, in file order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ImportError {
    /// The problems (at least one).
    pub problems: Vec<ImportProblem>,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expert CSV: {} problem(s)", self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// A cell and the line it starts on.
struct Cell {
    text: String,
    line: usize,
}

/// Splits CSV text into records of cells (RFC 4180), skipping blank lines.
fn records(text: &str) -> Result<Vec<Vec<Cell>>, ImportProblem> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out: Vec<Vec<Cell>> = Vec::new();
    let mut record: Vec<Cell> = Vec::new();
    let mut cell = String::new();
    let mut line = 1usize;
    let mut cell_line = 1usize;
    let mut quoted = false; // inside quotes
    let mut was_quoted = false; // the current cell was quoted (and closed)
    let mut quote_line = 0usize;
    let mut chars = text.chars().peekable();
    let end_record = |record: &mut Vec<Cell>, out: &mut Vec<Vec<Cell>>| {
        let blank = record.len() == 1 && record[0].text.is_empty();
        let rec = std::mem::take(record);
        if !blank {
            out.push(rec);
        }
    };
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => {
                    quoted = false;
                    was_quoted = true;
                }
                '\n' => {
                    line += 1;
                    cell.push('\n');
                }
                _ => cell.push(c),
            }
            continue;
        }
        match c {
            '"' if cell.is_empty() && !was_quoted => {
                quoted = true;
                quote_line = line;
            }
            ',' => {
                record.push(Cell {
                    text: std::mem::take(&mut cell),
                    line: cell_line,
                });
                was_quoted = false;
                cell_line = line;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                record.push(Cell {
                    text: std::mem::take(&mut cell),
                    line: cell_line,
                });
                was_quoted = false;
                end_record(&mut record, &mut out);
                line += 1;
                cell_line = line;
            }
            _ if was_quoted => {
                return Err(ImportProblem {
                    line,
                    column: None,
                    message: format!(
                        "cell {}: `{c}` after a closing quote (a quote inside a quoted cell \
                         is written \"\")",
                        record.len() + 1
                    ),
                });
            }
            _ => cell.push(c),
        }
    }
    if quoted {
        return Err(ImportProblem {
            line: quote_line,
            column: None,
            message: "a quoted cell is not closed".to_owned(),
        });
    }
    if !cell.is_empty() || !record.is_empty() || was_quoted {
        record.push(Cell {
            text: cell,
            line: cell_line,
        });
        end_record(&mut record, &mut out);
    }
    Ok(out)
}

const REQUIRED: [&str; 8] = [
    "id",
    "name",
    "facility",
    "departments",
    "title",
    "independent_practice_since",
    "licence_verified",
    "registration_active",
];

const OPTIONAL: [&str; 11] = [
    "expertise",
    "multi_site_filings",
    "languages",
    "schedule",
    "on_call",
    "last_heartbeat",
    "open_consultations",
    "sessions_today",
    "median_accept_seconds",
    "acceptance_rate",
    "response_count",
];

fn list(text: &str) -> Vec<String> {
    text.split([';', '；'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" | "是" => Ok(true),
        "false" | "no" | "n" | "0" | "否" => Ok(false),
        other => Err(format!(
            "`{other}` is not a boolean (true/false, yes/no, 1/0, 是/否)"
        )),
    }
}

fn whole(text: &str) -> Result<u32, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{}` is not a whole number", text.trim()))
}

/// Parses a schedule cell: `mon-fri 08:00-12:00; sat 20:00-08:00`.
pub fn parse_schedule_windows(text: &str) -> Result<Vec<WeeklyWindow>, String> {
    list(text)
        .iter()
        .map(|entry| {
            let (days, times) = entry
                .rsplit_once(char::is_whitespace)
                .ok_or_else(|| format!("`{entry}` is not `DAYS HH:MM-HH:MM`"))?;
            let (from, to) = times
                .split_once(['-', '–', '~'])
                .ok_or_else(|| format!("`{times}` is not `HH:MM-HH:MM`"))?;
            Ok(WeeklyWindow {
                days: days.parse::<Days>().map_err(|e| e.to_string())?,
                from: from.parse::<ClockTime>().map_err(|e| e.to_string())?,
                to: to.parse::<ClockTime>().map_err(|e| e.to_string())?,
            })
        })
        .collect()
}

/// Parses the CSV form of the registry into experts. Every problem (unknown or missing
/// columns, a wrong number of cells, a cell that does not parse, a duplicate id) is collected
/// and reported with its line and column.
pub fn parse_csv(text: &str) -> Result<Vec<Expert>, ImportError> {
    let fail = |p: ImportProblem| ImportError { problems: vec![p] };
    let rows = records(text).map_err(fail)?;
    let mut rows = rows.into_iter();
    let Some(header) = rows.next() else {
        return Err(fail(ImportProblem {
            line: 1,
            column: None,
            message: "the file is empty: a header row is needed".to_owned(),
        }));
    };
    let mut problems = Vec::new();
    let header_line = header.first().map_or(1, |c| c.line);
    let names: Vec<String> = header
        .iter()
        .map(|c| c.text.trim().to_ascii_lowercase())
        .collect();
    let mut col: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let at = Some((i + 1, name.clone()));
        if !REQUIRED.contains(&name.as_str()) && !OPTIONAL.contains(&name.as_str()) {
            problems.push(ImportProblem {
                line: header_line,
                column: at,
                message: format!(
                    "unknown column `{name}` (known: {}, {})",
                    REQUIRED.join(", "),
                    OPTIONAL.join(", ")
                ),
            });
        } else if col.insert(name.as_str(), i).is_some() {
            problems.push(ImportProblem {
                line: header_line,
                column: at,
                message: format!("column `{name}` appears twice"),
            });
        }
    }
    for r in REQUIRED {
        if !col.contains_key(r) {
            problems.push(ImportProblem {
                line: header_line,
                column: None,
                message: format!("required column `{r}` is missing"),
            });
        }
    }
    if !problems.is_empty() {
        return Err(ImportError { problems });
    }

    let mut experts = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for row in rows {
        let line = row.first().map_or(header_line, |c| c.line);
        if row.len() != names.len() {
            problems.push(ImportProblem {
                line,
                column: None,
                message: format!("{} cells, the header has {}", row.len(), names.len()),
            });
            continue;
        }
        let mut cells = RowReader {
            row: &row,
            col: &col,
            names: &names,
            problems: &mut problems,
        };
        let before = cells.problems.len();
        let id = cells.text("id");
        let expert = Expert {
            name: cells.text("name"),
            facility: cells.text("facility"),
            departments: list(&cells.raw("departments")),
            expertise: cells
                .parse("expertise", |t| {
                    list(t)
                        .iter()
                        .map(|c| IcdCode::parse(c).map_err(|e| e.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            title: cells
                .parse("title", |t| t.parse::<Title>().map_err(|e| e.to_string()))
                .unwrap_or(Title::Resident),
            independent_practice_since: cells
                .parse("independent_practice_since", |t| {
                    NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d")
                        .map_err(|_| format!("`{}` is not a date YYYY-MM-DD", t.trim()))
                })
                .unwrap_or_default(),
            licence_verified: cells.parse("licence_verified", boolean).unwrap_or(false),
            registration_active: cells.parse("registration_active", boolean).unwrap_or(false),
            multi_site_filings: list(&cells.raw("multi_site_filings")),
            languages: list(&cells.raw("languages")),
            schedule: Schedule {
                windows: cells
                    .parse("schedule", parse_schedule_windows)
                    .unwrap_or_default(),
                on_call: cells.optional("on_call", boolean).unwrap_or(false),
            },
            presence: Presence {
                last_heartbeat: cells.optional("last_heartbeat", |t| {
                    DateTime::parse_from_rfc3339(t.trim())
                        .map(|d| d.with_timezone(&Utc))
                        .map_err(|_| format!("`{}` is not an RFC 3339 time", t.trim()))
                }),
            },
            load: Load {
                open_consultations: cells.optional("open_consultations", whole).unwrap_or(0),
                sessions_today: cells.optional("sessions_today", whole).unwrap_or(0),
            },
            response: ResponseHistory {
                median_accept_seconds: cells.optional("median_accept_seconds", whole),
                acceptance_rate: cells.optional("acceptance_rate", |t| {
                    t.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| format!("`{}` is not a rate between 0 and 1", t.trim()))
                }),
                count: cells.optional("response_count", whole).unwrap_or(0),
            },
            id,
        };
        for (name, value) in [
            ("id", &expert.id),
            ("name", &expert.name),
            ("facility", &expert.facility),
        ] {
            if value.is_empty() {
                cells.problem(name, "is empty".to_owned());
            }
        }
        if expert.departments.is_empty() {
            cells.problem(
                "departments",
                "at least one department is needed".to_owned(),
            );
        }
        if !expert.id.is_empty() {
            if let Some(first) = first_line.get(&expert.id) {
                cells.problem(
                    "id",
                    format!("`{}` is already used on line {first}", expert.id),
                );
            } else {
                first_line.insert(expert.id.clone(), line);
            }
        }
        if cells.problems.len() == before {
            experts.push(expert);
        }
    }
    if problems.is_empty() {
        Ok(experts)
    } else {
        problems.sort_by_key(|p| (p.line, p.column.as_ref().map_or(0, |c| c.0)));
        Err(ImportError { problems })
    }
}

/// Reads the cells of one row by column name, collecting problems.
struct RowReader<'a> {
    row: &'a [Cell],
    col: &'a HashMap<&'a str, usize>,
    names: &'a [String],
    problems: &'a mut Vec<ImportProblem>,
}

impl RowReader<'_> {
    fn cell(&self, name: &str) -> Option<&Cell> {
        self.col.get(name).and_then(|&i| self.row.get(i))
    }

    fn raw(&self, name: &str) -> String {
        self.cell(name).map(|c| c.text.clone()).unwrap_or_default()
    }

    fn text(&self, name: &str) -> String {
        self.raw(name).trim().to_owned()
    }

    fn problem(&mut self, name: &str, message: String) {
        let (line, column) = match self.col.get(name) {
            Some(&i) => (
                self.row.get(i).map_or(0, |c| c.line),
                Some((i + 1, self.names[i].clone())),
            ),
            None => (self.row.first().map_or(0, |c| c.line), None),
        };
        self.problems.push(ImportProblem {
            line,
            column,
            message,
        });
    }

    /// A cell that must parse (a missing optional column or an empty cell parses as "").
    /// A problem makes the row rejected, so the `None` is never used as a value.
    fn parse<T>(&mut self, name: &str, f: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let text = self.raw(name);
        match f(&text) {
            Ok(v) => Some(v),
            Err(message) => {
                self.problem(name, message);
                None
            }
        }
    }

    /// An optional cell: none when the column is absent or the cell empty.
    fn optional<T>(&mut self, name: &str, f: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let text = self.raw(name);
        if text.trim().is_empty() {
            return None;
        }
        match f(&text) {
            Ok(v) => Some(v),
            Err(message) => {
                self.problem(name, message);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "id,name,facility,departments,expertise,title,independent_practice_since,licence_verified,registration_active,schedule,on_call";

    #[test]
    fn a_good_file() {
        let text = format!(
            "\u{feff}{HEADER}\r\n\
             e1,张明,H-PUMCH,03.02;03,\"I25; i20.0\",主任医师,2008-07-01,true,是,\"mon-fri 08:00-12:00; sat 20:00-08:00\",yes\r\n\
             \r\n\
             e2,\"Li, \"\"Wei\"\"\",H-2,04,,attending,2019-01-31,1,0,,\n"
        );
        let experts = parse_csv(&text).unwrap();
        assert_eq!(experts.len(), 2);
        let e = &experts[0];
        assert_eq!(e.departments, ["03.02", "03"]);
        assert_eq!(e.expertise[1].to_string(), "I20.0");
        assert_eq!(e.title, Title::Chief);
        assert!(e.registration_active && e.schedule.on_call);
        assert_eq!(e.schedule.windows.len(), 2);
        assert_eq!(e.schedule.windows[1].to.to_string(), "08:00");
        let e = &experts[1];
        assert_eq!(e.name, "Li, \"Wei\"");
        assert!(e.expertise.is_empty() && !e.registration_active && !e.schedule.on_call);
        assert_eq!(e.title, Title::Attending);
    }

    #[test]
    fn every_problem_with_line_and_column() {
        let text = format!(
            "{HEADER}\n\
             e1,A,H,03,I25,教授,2008-07-01,true,true,,\n\
             e2,\"B\nsecond line\",H,03,X9,主任医师,2008-02-30,maybe,true,mon-fri 8-12,\n\
             e1,C,H,03,,主任医师,2008-07-01,true,true,,\n\
             e4,D,H,03\n"
        );
        let err = parse_csv(&text).unwrap_err();
        let shown: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "line 2, column 6 (title): `教授` is not a title (住院医师, 主治医师, 副主任医师, 主任医师, or resident, attending, associate chief, chief)",
                "line 4, column 5 (expertise): `X9` is not an ICD-10 code (a letter, two digits, then letters or digits, e.g. I25.10)",
                "line 4, column 7 (independent_practice_since): `2008-02-30` is not a date YYYY-MM-DD",
                "line 4, column 8 (licence_verified): `maybe` is not a boolean (true/false, yes/no, 1/0, 是/否)",
                "line 4, column 10 (schedule): `8` is not a time of day HH:MM (00:00 to 24:00)",
                "line 5, column 1 (id): `e1` is already used on line 2",
                "line 6: 4 cells, the header has 11",
            ]
        );
        assert!(
            err.to_string()
                .starts_with("expert CSV: 7 problem(s)\n  line 2, column 6")
        );
    }

    #[test]
    fn header_problems() {
        let err = parse_csv("id,name,facility,departments,title,colour\n").unwrap_err();
        let shown: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        assert!(shown[0].starts_with("line 1, column 6 (colour): unknown column `colour`"));
        assert_eq!(
            &shown[1..],
            [
                "line 1: required column `independent_practice_since` is missing",
                "line 1: required column `licence_verified` is missing",
                "line 1: required column `registration_active` is missing",
            ]
        );
        assert_eq!(
            parse_csv("").unwrap_err().problems[0].message,
            "the file is empty: a header row is needed"
        );
        let err = parse_csv(&format!("{HEADER}\ne1,\"open\n")).unwrap_err();
        assert_eq!(
            err.problems[0].to_string(),
            "line 2: a quoted cell is not closed"
        );
        let err = parse_csv(&format!("{HEADER}\ne1,\"a\"b,H\n")).unwrap_err();
        assert!(
            err.problems[0]
                .to_string()
                .starts_with("line 2: cell 2: `b` after a closing quote")
        );
    }

    #[test]
    fn runtime_columns() {
        let text = "id,name,facility,departments,title,independent_practice_since,licence_verified,registration_active,last_heartbeat,open_consultations,acceptance_rate,median_accept_seconds,response_count\n\
                    e1,A,H,03,chief,2008-07-01,1,1,2026-01-15T08:00:00+08:00,2,0.75,120,9\n\
                    e2,B,H,03,chief,2008-07-01,1,1,,,1.5,,\n";
        let err = parse_csv(text).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert_eq!(
            err.problems[0].to_string(),
            "line 3, column 11 (acceptance_rate): `1.5` is not a rate between 0 and 1"
        );
        let ok = parse_csv(&text.replace("1.5", "")).unwrap();
        let e = &ok[0];
        assert_eq!(e.load.open_consultations, 2);
        assert_eq!(e.response.acceptance_rate, Some(0.75));
        assert_eq!(e.response.count, 9);
        assert_eq!(
            e.presence.last_heartbeat.unwrap().to_rfc3339(),
            "2026-01-15T00:00:00+00:00"
        );
        assert_eq!(ok[1].response, ResponseHistory::default());
    }
}
