//! CSV contact files: header mapping, per-row validation with file line numbers,
//! and the import report. Reads any `io::Read`; the caller decides where bytes come from.
//!
//! Memory and time are bounded whatever the content: records are parsed with
//! `csv-core` into a fixed buffer of [`MAX_ROW_BYTES`], so a row longer than that
//! (a quoted field holding millions of newlines, a 1 GB line) is skipped as a row
//! error while it streams past, never buffered; a header wider than [`MAX_COLUMNS`]
//! refuses the file as soon as the cap is crossed; and every step is linear in the
//! input.

use std::collections::HashSet;
use std::io::{self, Read};

use super::contact::{self, Attributes, NewContact};
use super::phone::PhonePolicy;

/// At most this many row errors are described in a report; all are counted.
pub const MAX_ERROR_DETAILS: usize = 100;

/// The longest row (or header row) read, in bytes after unquoting. A valid row is
/// far shorter (50 attributes of 1,024 four-byte characters are 200 KiB); a longer
/// one is a row error and is skipped without being held in memory.
pub const MAX_ROW_BYTES: usize = 256 * 1024;

/// Columns a header row may have, empty ones included. Attribute columns are
/// further capped at [`contact::MAX_ATTRIBUTES`].
pub const MAX_COLUMNS: usize = 1_000;

/// Bytes read from the input at a time.
const READ_CHUNK: usize = 64 * 1024;

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
    #[error("the header row has more than {max} attribute columns", max = contact::MAX_ATTRIBUTES)]
    TooManyAttributes,
    #[error("the header row has more than {MAX_COLUMNS} columns")]
    TooManyColumns,
    #[error("the header row is longer than {MAX_ROW_BYTES} bytes")]
    LongHeader,
    #[error("column name {0:?} is longer than {max} characters", max = contact::MAX_ATTRIBUTE_KEY_CHARS)]
    LongColumnName(String),
    #[error("column name {0:?} contains a NUL character")]
    NulInColumnName(String),
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
    /// Linear in the header: the caps are checked as columns are met, and
    /// repeated names are found with a set.
    fn from_header(header: &Record<'_>) -> Result<Self, CsvFileError> {
        let width = header.len();
        if width == 0 || (width == 1 && header.field(0).is_empty()) {
            return Err(CsvFileError::Empty);
        }
        let mut phone = None;
        let mut name = None;
        let mut attributes: Vec<(usize, String)> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for i in 0..width {
            let raw = header.field(i);
            let raw = if i == 0 {
                raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
            } else {
                raw
            };
            let title = std::str::from_utf8(raw).map_err(|_| CsvFileError::NotText)?.trim();
            if super::check_text(title).is_err() {
                return Err(CsvFileError::NulInColumnName(title.into()));
            }
            let slot = match title.to_ascii_lowercase().as_str() {
                "phone_number" | "phone" => &mut phone,
                "name" => &mut name,
                "" => continue,
                _ => {
                    if attributes.len() == contact::MAX_ATTRIBUTES {
                        return Err(CsvFileError::TooManyAttributes);
                    }
                    if title.chars().count() > contact::MAX_ATTRIBUTE_KEY_CHARS {
                        return Err(CsvFileError::LongColumnName(title.into()));
                    }
                    if !seen.insert(title) {
                        return Err(CsvFileError::RepeatedColumn(title.into()));
                    }
                    attributes.push((i, title.to_string()));
                    continue;
                }
            };
            if slot.replace(i).is_some() {
                return Err(CsvFileError::RepeatedColumn(title.into()));
            }
        }
        Ok(Self {
            phone: phone.ok_or(CsvFileError::MissingColumn("phone_number"))?,
            name: name.ok_or(CsvFileError::MissingColumn("name"))?,
            attributes,
            width,
        })
    }
}

/// What one data row of the file turned out to be.
#[derive(Debug, PartialEq)]
pub enum Row {
    /// A valid contact. A phone number already on an earlier line is not
    /// caught here: the store links it once and counts the rest as
    /// duplicates, so a file of any length is parsed in constant memory.
    Contact(NewContact),
    /// A bad row, described as `line N: reason`.
    Invalid(String),
}

/// One parsed record: its fields (when it fit the buffers) and where it started.
struct Record<'a> {
    /// File line (1-based) of the record's first byte.
    line: u64,
    /// Fields the record has, including any beyond the ends buffer.
    fields: usize,
    /// The record was longer than [`MAX_ROW_BYTES`]; its bytes were dropped.
    too_long: bool,
    /// `None` when the fields did not fit (too long or too many).
    data: Option<(&'a [u8], &'a [usize])>,
}

impl Record<'_> {
    fn len(&self) -> usize {
        self.fields
    }

    /// Field `i`; only call when `data` is present.
    fn field(&self, i: usize) -> &[u8] {
        let (out, ends) = self.data.expect("a record that fit its buffers");
        let start = if i == 0 { 0 } else { ends[i - 1] };
        &out[start..ends[i]]
    }
}

/// Streams CSV records out of a reader into fixed buffers.
struct Records<R> {
    input: R,
    core: csv_core::Reader,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
    /// Line breaks consumed so far.
    lines: LineBreaks,
    out: Box<[u8]>,
    ends: Vec<usize>,
}

impl<R: Read> Records<R> {
    fn new(input: R) -> Self {
        Self {
            input,
            core: csv_core::Reader::new(),
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            lines: LineBreaks::default(),
            out: vec![0; MAX_ROW_BYTES].into_boxed_slice(),
            ends: Vec::new(),
        }
    }

    /// Refills the input buffer once it is used up.
    fn fill(&mut self) -> io::Result<()> {
        if self.pos == self.len && !self.eof {
            let n = loop {
                match self.input.read(&mut self.buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            (self.pos, self.len, self.eof) = (0, n, n == 0);
        }
        Ok(())
    }

    /// The next record, keeping at most `max_fields` field ends; `None` at the end.
    fn next(&mut self, max_fields: usize) -> io::Result<Option<Record<'_>>> {
        // Line terminators and blank lines between records: skipped here (the
        // parser would skip them too) so the record's first line is known.
        loop {
            self.fill()?;
            let rest = &self.buf[self.pos..self.len];
            let skip = rest.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
            self.lines.count(&rest[..skip]);
            self.pos += skip;
            if self.pos < self.len || self.eof {
                break;
            }
        }
        let line = self.lines.breaks + 1;
        self.ends.resize(max_fields + 1, 0);
        let (mut out_len, mut ends_len, mut dropped_fields, mut too_long) = (0, 0, 0, false);
        loop {
            self.fill()?;
            let input = &self.buf[self.pos..self.len];
            let (result, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.out[out_len..], &mut self.ends[ends_len..]);
            self.lines.count(&input[..nin]);
            self.pos += nin;
            out_len += nout;
            ends_len += nend;
            match result {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => {
                    // Too long to be a contact: keep parsing to find its end, dropping its bytes.
                    too_long = true;
                    out_len = 0;
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    dropped_fields += ends_len;
                    ends_len = 0;
                }
                csv_core::ReadRecordResult::Record => {
                    let fits = !too_long && dropped_fields == 0;
                    return Ok(Some(Record {
                        line,
                        fields: dropped_fields + ends_len,
                        too_long,
                        data: fits.then(|| (&self.out[..out_len], &self.ends[..ends_len])),
                    }));
                }
                csv_core::ReadRecordResult::End => return Ok(None),
            }
        }
    }
}

/// Counts line breaks as the parser does: `\r\n`, `\n`, or a `\r` alone.
#[derive(Default)]
struct LineBreaks {
    breaks: u64,
    /// The last byte counted was `\r` (its `\n` may start the next chunk).
    after_cr: bool,
}

impl LineBreaks {
    fn count(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.breaks += u64::from(b == b'\r' || (b == b'\n' && !self.after_cr));
            self.after_cr = b == b'\r';
        }
    }
}

/// Streams the rows of a contact CSV file.
pub struct CsvContacts<R: Read> {
    records: Records<R>,
    columns: Columns,
    policy: PhonePolicy,
}

impl<R: Read> CsvContacts<R> {
    /// Reads and checks the header row.
    pub fn new(input: R, policy: PhonePolicy) -> Result<Self, CsvFileError> {
        let mut records = Records::new(input);
        let read_error = |e: io::Error| CsvFileError::Read(e.to_string());
        let columns = match records.next(MAX_COLUMNS).map_err(read_error)? {
            None => return Err(CsvFileError::Empty),
            Some(header) if header.too_long => return Err(CsvFileError::LongHeader),
            Some(header) if header.fields > MAX_COLUMNS => return Err(CsvFileError::TooManyColumns),
            Some(header) => Columns::from_header(&header)?,
        };
        Ok(Self {
            records,
            columns,
            policy,
        })
    }

    /// The next row, `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<Row>, CsvFileError> {
        let record = self
            .records
            .next(self.columns.width)
            .map_err(|e| CsvFileError::Read(e.to_string()))?;
        Ok(record.map(|record| parse_record(&record, &self.columns, &self.policy)))
    }
}

fn parse_record(record: &Record<'_>, columns: &Columns, policy: &PhonePolicy) -> Row {
    let invalid = |reason: String| Row::Invalid(format!("line {}: {reason}", record.line));
    if record.too_long {
        return invalid(format!("the row is longer than {MAX_ROW_BYTES} bytes"));
    }
    if record.len() != columns.width {
        return invalid(format!("expected {} fields, found {}", columns.width, record.len()));
    }
    let field = |i: usize| std::str::from_utf8(record.field(i)).map(str::trim);
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
    let phone_number = match policy.normalize(phone) {
        Ok(p) => p,
        Err(reason) => return invalid(reason),
    };
    if let Err(reason) = contact::check_name(name) {
        return invalid(format!("name {reason}"));
    }
    if let Err(reason) = contact::check_attributes(&attributes) {
        return invalid(reason);
    }
    Row::Contact(NewContact {
        phone_number,
        name: name.to_string(),
        attributes,
    })
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
            phone_number: PhonePolicy::default().normalize(phone).expect("a valid test number"),
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
    fn ragged_rows_bad_utf8_blank_names_and_repeats_left_to_the_store() {
        let input =
            b"phone,name\n5551230001,A\n5551230002\n5551230003,\xff\xfe\n5551230004,  \n+1 555 123 0001,Again\n";
        let got = rows(input).unwrap();
        assert_eq!(got[0], contact("+15551230001", "A", &[]));
        assert_eq!(got[1], Row::Invalid("line 3: expected 2 fields, found 1".into()));
        assert_eq!(got[2], Row::Invalid("line 4: not valid UTF-8".into()));
        assert_eq!(got[3], Row::Invalid("line 5: name must not be blank".into()));
        assert_eq!(got[4], contact("+15551230001", "Again", &[]));
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
            Err(CsvFileError::TooManyAttributes)
        ));
        let empties = ",".repeat(MAX_COLUMNS);
        assert!(matches!(
            rows(format!("phone,name{empties}\n").as_bytes()),
            Err(CsvFileError::TooManyColumns)
        ));
        assert!(matches!(
            rows(b"phone,name,a\0b\n"),
            Err(CsvFileError::NulInColumnName(_))
        ));
        let long = "x".repeat(65);
        assert!(matches!(
            rows(format!("phone,name,{long}\n").as_bytes()),
            Err(CsvFileError::LongColumnName(_))
        ));
    }

    #[test]
    fn an_overlong_row_is_skipped_and_later_lines_keep_their_numbers() {
        let newlines = MAX_ROW_BYTES + 10;
        let mut input = b"phone,name\n5551230001,A\n5551230002,\"".to_vec();
        input.extend(std::iter::repeat_n(b'\n', newlines));
        input.extend(b"\"\n12345,B\r\n5551230003,C\n");
        let got = rows(&input).unwrap();
        assert_eq!(got[0], contact("+15551230001", "A", &[]));
        assert_eq!(
            got[1],
            Row::Invalid(format!("line 3: the row is longer than {MAX_ROW_BYTES} bytes"))
        );
        let next = 3 + newlines as u64 + 1;
        assert_eq!(
            got[2],
            Row::Invalid(format!("line {next}: invalid phone number \"12345\""))
        );
        assert_eq!(got[3], contact("+15551230003", "C", &[]));
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn rows_with_extra_fields_are_counted_exactly() {
        let got = rows(b"phone,name\n5551230001,A,b,c,d\n5551230002,B\n").unwrap();
        assert_eq!(got[0], Row::Invalid("line 2: expected 2 fields, found 5".into()));
        assert_eq!(got[1], contact("+15551230002", "B", &[]));
    }

    #[test]
    fn nul_in_a_field_is_a_row_error_naming_it() {
        let got = rows(b"phone,name,city\n5551230001,A\0,x\n555123\x0000,B,x\n5551230003,C,x\0\n").unwrap();
        assert_eq!(
            got,
            [
                Row::Invalid("line 2: name must not contain a NUL character".into()),
                Row::Invalid("line 3: phone number must not contain a NUL character".into()),
                Row::Invalid("line 4: attribute \"city\" must not contain a NUL character".into()),
            ]
        );
    }

    #[test]
    fn a_header_too_long_or_too_wide_is_refused_at_once() {
        let long = format!("phone,name,\"{}\"\n", "x".repeat(MAX_ROW_BYTES));
        assert!(matches!(rows(long.as_bytes()), Err(CsvFileError::LongHeader)));
        let wide = format!("phone,name{}\n", ",c".repeat(300_000));
        let started = std::time::Instant::now();
        assert!(matches!(rows(wide.as_bytes()), Err(CsvFileError::LongHeader)));
        let wide = format!("phone,name{}\n", ",".repeat(300_000));
        assert!(matches!(rows(wide.as_bytes()), Err(CsvFileError::TooManyColumns)));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
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
