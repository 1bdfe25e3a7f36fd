//! CSV contact files: header mapping, per-row validation with file line numbers,
//! and the import report. Reads any `io::Read`; the caller decides where bytes come from.

use std::collections::VecDeque;
use std::io::{self, Read};

use super::contact::{self, Attributes, NewContact, RepeatFilter};
use super::phone::PhonePolicy;

/// At most this many row errors are described in a report; all are counted.
pub const MAX_ERROR_DETAILS: usize = 100;

/// Why a whole file is refused (HTTP 400); nothing of it is imported.
#[derive(Debug, thiserror::Error)]
pub enum CsvFileError {
    #[error("the file is empty: a header row with phone_number and name is required")]
    Empty,
    #[error("the header row is not UTF-8 text")]
    NotText,
    #[error("the header row has no {0} column")]
    MissingColumn(&'static str),
    #[error("the header row names column {0:?} twice")]
    RepeatedColumn(String),
    #[error("the header row has {0} attribute columns; at most {max} are allowed", max = contact::MAX_ATTRIBUTES)]
    TooManyColumns(usize),
    #[error("column name {0:?} is longer than {max} characters", max = contact::MAX_ATTRIBUTE_KEY_CHARS)]
    LongColumnName(String),
    #[error("the file could not be read: {0}")]
    Read(String),
}

/// Where each field of a row goes.
#[derive(Debug)]
struct Columns {
    phone: usize,
    name: usize,
    attributes: Vec<(usize, String)>,
    width: usize,
}

impl Columns {
    fn from_header(header: &csv::ByteRecord) -> Result<Self, CsvFileError> {
        if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
            return Err(CsvFileError::Empty);
        }
        let mut phone = None;
        let mut name = None;
        let mut attributes: Vec<(usize, String)> = Vec::new();
        for (i, raw) in header.iter().enumerate() {
            let raw = if i == 0 {
                raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
            } else {
                raw
            };
            let title = std::str::from_utf8(raw).map_err(|_| CsvFileError::NotText)?.trim();
            if title.contains('\0') {
                return Err(CsvFileError::NotText);
            }
            let slot = match title.to_ascii_lowercase().as_str() {
                "phone_number" | "phone" => &mut phone,
                "name" => &mut name,
                "" => continue,
                _ => {
                    if attributes.iter().any(|(_, a)| a == title) {
                        return Err(CsvFileError::RepeatedColumn(title.into()));
                    }
                    if title.chars().count() > contact::MAX_ATTRIBUTE_KEY_CHARS {
                        return Err(CsvFileError::LongColumnName(title.into()));
                    }
                    attributes.push((i, title.to_string()));
                    continue;
                }
            };
            if slot.replace(i).is_some() {
                return Err(CsvFileError::RepeatedColumn(title.into()));
            }
        }
        if attributes.len() > contact::MAX_ATTRIBUTES {
            return Err(CsvFileError::TooManyColumns(attributes.len()));
        }
        Ok(Self {
            phone: phone.ok_or(CsvFileError::MissingColumn("phone_number"))?,
            name: name.ok_or(CsvFileError::MissingColumn("name"))?,
            attributes,
            width: header.len(),
        })
    }
}

/// What one data row of the file turned out to be.
#[derive(Debug, PartialEq)]
pub enum Row {
    Contact(NewContact),
    /// The phone number appeared on an earlier line of the file.
    Repeat,
    /// A bad row, described as `line N: reason`.
    Invalid(String),
}

/// Remembers where every `\n` of the input is, so a record's file line can be
/// computed from its byte offset. The csv crate's own line count runs one behind
/// after a CRLF (it consumes the `\n` only when the next record starts).
struct NewlineTracker<R> {
    inner: R,
    offset: u64,
    /// Offsets of newlines read ahead of the record being parsed.
    pending: VecDeque<u64>,
    /// Newlines at offsets already passed by the parser.
    passed: u64,
}

impl<R: Read> Read for NewlineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, _) in buf[..n].iter().enumerate().filter(|(_, b)| **b == b'\n') {
            self.pending.push_back(self.offset + i as u64);
        }
        self.offset += n as u64;
        Ok(n)
    }
}

impl<R> NewlineTracker<R> {
    /// The 1-based line of the first byte after `offset` that is not a newline ending the previous line.
    fn line_at(&mut self, offset: u64) -> u64 {
        while self.pending.front().is_some_and(|&nl| nl <= offset) {
            self.pending.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

/// Streams the rows of a contact CSV file.
pub struct CsvContacts<R: Read> {
    reader: csv::Reader<NewlineTracker<R>>,
    columns: Columns,
    policy: PhonePolicy,
    repeats: RepeatFilter,
    record: csv::ByteRecord,
}

impl<R: Read> CsvContacts<R> {
    /// Reads and checks the header row.
    pub fn new(input: R, policy: PhonePolicy) -> Result<Self, CsvFileError> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .buffer_capacity(1 << 16)
            .from_reader(NewlineTracker {
                inner: input,
                offset: 0,
                pending: VecDeque::new(),
                passed: 0,
            });
        let header = reader.byte_headers().map_err(|e| CsvFileError::Read(e.to_string()))?;
        let columns = Columns::from_header(header)?;
        Ok(Self {
            reader,
            columns,
            policy,
            repeats: RepeatFilter::default(),
            record: csv::ByteRecord::new(),
        })
    }

    /// The next row, `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<Row>, CsvFileError> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let start = self.record.position().map_or(0, |p| p.byte());
                let line = self.reader.get_mut().line_at(start);
                Ok(Some(self.parse_record(line)))
            }
            Err(e) => Err(CsvFileError::Read(e.to_string())),
        }
    }

    fn parse_record(&mut self, line: u64) -> Row {
        let invalid = |reason: String| Row::Invalid(format!("line {line}: {reason}"));
        let columns = &self.columns;
        if self.record.len() != columns.width {
            return invalid(format!(
                "expected {} fields, found {}",
                columns.width,
                self.record.len()
            ));
        }
        let field = |i: usize| std::str::from_utf8(&self.record[i]).map(str::trim);
        let (Ok(phone), Ok(name)) = (field(columns.phone), field(columns.name)) else {
            return invalid("not valid UTF-8".into());
        };
        let mut attributes = Attributes::new();
        for (i, key) in &columns.attributes {
            match field(*i) {
                Ok("") => {}
                Ok(value) => {
                    attributes.insert(key.clone(), value.to_string());
                }
                Err(_) => return invalid("not valid UTF-8".into()),
            }
        }
        let phone_number = match self.policy.normalize(phone) {
            Ok(p) => p,
            Err(reason) => return invalid(reason),
        };
        if let Err(reason) = contact::check_name(name) {
            return invalid(format!("name {reason}"));
        }
        if let Err(reason) = contact::check_attributes(&attributes) {
            return invalid(reason);
        }
        if self.repeats.is_repeat(&phone_number) {
            return Row::Repeat;
        }
        Row::Contact(NewContact {
            phone_number,
            name: name.to_string(),
            attributes,
        })
    }
}

/// The outcome of an import as the API reports it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub imported: u64,
    pub duplicates: u64,
    pub errors: u64,
    pub error_details: Vec<String>,
    pub total_contacts: u64,
}

impl ImportReport {
    pub fn record_error(&mut self, detail: String) {
        self.errors += 1;
        if self.error_details.len() < MAX_ERROR_DETAILS {
            self.error_details.push(detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(input: &[u8]) -> Result<Vec<Row>, CsvFileError> {
        let mut parser = CsvContacts::new(input, PhonePolicy::default())?;
        let mut out = Vec::new();
        while let Some(row) = parser.next_row()? {
            out.push(row);
        }
        Ok(out)
    }

    fn contact(phone: &str, name: &str, attributes: &[(&str, &str)]) -> Row {
        Row::Contact(NewContact {
            phone_number: phone.into(),
            name: name.into(),
            attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        })
    }

    #[test]
    fn bom_crlf_any_column_order_and_case() {
        let got = rows(b"\xEF\xBB\xBFName,City,PHONE\r\nAda,Paris,(555) 123-0001\r\n").unwrap();
        assert_eq!(got, [contact("+15551230001", "Ada", &[("City", "Paris")])]);
    }

    #[test]
    fn crlf_files_report_file_lines() {
        let input = b"phone_number,name\r\n5551230001,Ada\r\n\"x\r\ny\",Grace\r\n12345,Bad\r\n";
        let got = rows(input).unwrap();
        assert_eq!(got[1], Row::Invalid(r#"line 3: invalid phone number "x\r\ny""#.into()));
        assert_eq!(got[2], Row::Invalid("line 5: invalid phone number \"12345\"".into()));
    }

    #[test]
    fn quoted_commas_and_newlines_keep_file_line_numbers() {
        let input = b"phone_number,name,note\n5551230001,\"Lovelace, Ada\",\"two\nlines\"\nbad,Bob,x\n";
        let got = rows(input).unwrap();
        assert_eq!(
            got[0],
            contact("+15551230001", "Lovelace, Ada", &[("note", "two\nlines")])
        );
        assert_eq!(got[1], Row::Invalid("line 4: invalid phone number \"bad\"".into()));
    }

    #[test]
    fn ragged_rows_bad_utf8_blank_names_and_repeats() {
        let input =
            b"phone,name\n5551230001,A\n5551230002\n5551230003,\xff\xfe\n5551230004,  \n+1 555 123 0001,Again\n";
        let got = rows(input).unwrap();
        assert_eq!(got[0], contact("+15551230001", "A", &[]));
        assert_eq!(got[1], Row::Invalid("line 3: expected 2 fields, found 1".into()));
        assert_eq!(got[2], Row::Invalid("line 4: not valid UTF-8".into()));
        assert_eq!(got[3], Row::Invalid("line 5: name must not be blank".into()));
        assert_eq!(got[4], Row::Repeat);
    }

    #[test]
    fn unusable_headers_refuse_the_file() {
        assert!(matches!(rows(b""), Err(CsvFileError::Empty)));
        assert!(matches!(
            rows(b"name,city\nA,B\n"),
            Err(CsvFileError::MissingColumn("phone_number"))
        ));
        assert!(matches!(
            rows(b"phone,phone_number,name\n"),
            Err(CsvFileError::RepeatedColumn(_))
        ));
        assert!(matches!(rows(b"\xff\xd8\xff\xe0,name\n"), Err(CsvFileError::NotText)));
        assert_eq!(rows(b"phone,name\n").unwrap(), []);
        let wide: String = (0..51).map(|i| format!(",c{i}")).collect();
        assert!(matches!(
            rows(format!("phone,name{wide}\n").as_bytes()),
            Err(CsvFileError::TooManyColumns(51))
        ));
        let long = "x".repeat(65);
        assert!(matches!(
            rows(format!("phone,name,{long}\n").as_bytes()),
            Err(CsvFileError::LongColumnName(_))
        ));
    }

    #[test]
    fn report_keeps_first_hundred_details() {
        let mut report = ImportReport::default();
        for i in 0..150 {
            report.record_error(format!("line {i}: x"));
        }
        assert_eq!(report.errors, 150);
        assert_eq!(report.error_details.len(), MAX_ERROR_DETAILS);
    }
}
