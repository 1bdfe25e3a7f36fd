//! Fuzzing of the two parsers that read user text (SPEC §9): the CSV contact
//! importer and the template language of the default template plugin.
//!
//! Runs on the stable toolchain: a seeded generator (grammar-aware, plus byte
//! mutations of valid files) feeds each parser and checks properties of every
//! answer, with differential oracles (the `csv` crate for record boundaries, the
//! plugin's parser against the host's quick template check). `cargo test` runs a
//! few thousand cases in a few seconds; a long run is
//!
//! ```sh
//! FUZZ_CASES=2000000 FUZZ_SEED=$RANDOM cargo test --release -p herald --test fuzz -- --nocapture
//! ```
//!
//! A failure prints its seed, case number and input: pin the input as a regression
//! test below (`regressions`).

use std::time::{Duration, Instant};

use herald::domain::csv_import::{CsvContacts, CsvFileError, Row};
use herald::domain::phone::PhonePolicy;
use herald::domain::{contact, template as host_template};

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `case` on `cases` generated inputs; a panic names the seed, the case and the input.
fn fuzz<T: std::fmt::Debug>(target: &str, default_cases: u64, generate: impl Fn(&mut Rng) -> T, check: impl Fn(&T)) {
    let cases = env_or("FUZZ_CASES", default_cases);
    let seed = env_or("FUZZ_SEED", 0x5EED);
    let started = Instant::now();
    for case in 0..cases {
        let mut rng = Rng((seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
        let input = generate(&mut rng);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        if let Err(panic) = outcome {
            eprintln!("{target}: seed {seed}, case {case} failed on input:\n{input:?}");
            std::panic::resume_unwind(panic);
        }
    }
    eprintln!("{target}: {cases} cases from seed {seed} in {:?}", started.elapsed());
}

// ---------------------------------------------------------------- CSV importer

const CSV_TOKENS: &[&[u8]] = &[
    b",",
    b",",
    b"\"",
    b"\"\"",
    b"\n",
    b"\r\n",
    b"\r",
    b" ",
    b"5551230001",
    b"+1 (555) 123-0002",
    b"555.123.0003",
    b"12345",
    b"Ada",
    b"\xC3\xA9",
    b"\xF0\x9F\x91\x8B",
    b"\xFF",
    b"\xC3",
    b"\0",
    b"\xEF\xBB\xBF",
    b"phone",
    b"name",
    b"x",
    b"{{",
    b"'",
    b"\t",
];

/// A file: a header of known and odd columns, then rows of tokens; or a valid
/// file with bytes inserted, removed or flipped.
fn csv_input(rng: &mut Rng) -> Vec<u8> {
    let headers: &[&[u8]] = &[
        b"phone_number,name",
        b"\xEF\xBB\xBFName,PHONE,city",
        b"phone,name,city,note",
        b"name,phone_number,\"a,b\",\"x\ny\"",
        b"phone,name,,",
        b"phone,phone,name",
        b"city,name",
        b"",
    ];
    let mut file = rng.pick(headers).to_vec();
    file.extend_from_slice(if rng.chance(4) { b"\r\n" } else { b"\n" });
    for _ in 0..rng.below(12) {
        if rng.chance(2) {
            let row: &[u8] = rng.pick(&[
                b"5551230001,Ada,Paris,n".as_slice(),
                b"\"555 123 0002\",\"Lovelace, Ada\",\"two\nlines\",\"\"\"q\"\"\"",
                b"5551230003,Grace",
            ]);
            file.extend_from_slice(row);
        } else {
            for _ in 0..rng.below(10) {
                file.extend_from_slice(rng.pick(CSV_TOKENS));
            }
        }
        file.extend_from_slice(if rng.chance(3) { b"\r\n" } else { b"\n" });
    }
    for _ in 0..rng.below(4) {
        let at = rng.below(file.len() + 1);
        match rng.below(3) {
            0 => file.insert(at, rng.next() as u8),
            1 if at < file.len() => {
                file.remove(at);
            }
            _ if at < file.len() => file[at] ^= 1 << rng.below(8),
            _ => {}
        }
    }
    file
}

/// Parses a whole file, checking every row as it comes.
fn check_csv(input: &[u8]) -> Result<Vec<Row>, CsvFileError> {
    let policy = PhonePolicy::default();
    let mut parser = CsvContacts::new(input, policy.clone())?;
    // Lines as a text editor counts them: `\r\n`, `\n` or a lone `\r` ends one.
    let breaks = input
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\r' || (b == b'\n' && (i == 0 || input[i - 1] != b'\r')))
        .count();
    let lines = breaks as u64 + 1;
    let mut rows = Vec::new();
    let mut last_line = 1;
    while let Some(row) = parser.next_row()? {
        match &row {
            Row::Contact(c) => {
                assert_eq!(
                    policy.normalize(&c.phone_number).as_deref(),
                    Ok(c.phone_number.as_str())
                );
                assert_eq!(contact::check_name(&c.name), Ok(()));
                assert_eq!(c.name.trim(), c.name);
                assert_eq!(contact::check_attributes(&c.attributes), Ok(()));
            }
            Row::Invalid(detail) => {
                let line: u64 = detail
                    .strip_prefix("line ")
                    .and_then(|rest| rest.split(':').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("row error without a line: {detail:?}"));
                assert!(
                    (last_line + 1..=lines).contains(&line),
                    "line {line} after {last_line} of {lines}: {detail}"
                );
                last_line = line;
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Records after the header, as the `csv` crate (same dialect) counts them.
fn csv_crate_rows(input: &[u8]) -> Option<usize> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(input);
    reader.byte_headers().ok()?;
    Some(reader.byte_records().count())
}

#[test]
fn csv_importer() {
    fuzz("csv", 3_000, csv_input, |input| {
        let started = Instant::now();
        let outcome = check_csv(input);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "slow: {:?}",
            started.elapsed()
        );
        if let Ok(rows) = outcome {
            assert_eq!(
                Some(rows.len()),
                csv_crate_rows(input),
                "records differ from the csv crate's"
            );
        }
    });
}

// ------------------------------------------------------------ template parser

const TEMPLATE_TOKENS: &[&str] = &[
    "{{",
    "}}",
    "{",
    "}",
    " ",
    "\n",
    "|",
    ":",
    "\"",
    "'",
    "\\",
    "\\\"",
    "name",
    "first_name",
    "_x.y-z",
    "default",
    "upper",
    "lower",
    "first_word",
    "loud",
    "Hi ",
    "é",
    "👋",
    "ж",
    "\0",
    "1",
    "default:\"there\"",
    "{{ name }}",
    "{{ name | default:'}}' }}",
];

fn template_input(rng: &mut Rng) -> String {
    let mut out = String::new();
    for _ in 0..rng.below(24) {
        out.push_str(rng.pick(TEMPLATE_TOKENS));
    }
    if rng.chance(50) {
        out = out.repeat(1 + rng.below(400));
    }
    out
}

fn check_template(input: &str) {
    let chars = input.chars().count();
    match template_default::template::parse(input) {
        Err(error) => {
            let position = error.position.map_or(0, |p| p as usize);
            assert!(
                position <= chars,
                "position {position} past {chars} characters: {error:?}"
            );
            assert!(!error.message.is_empty());
        }
        Ok(parsed) => {
            // The host's quick check must never refuse what the plugin accepts
            // (but for NUL characters, which Herald refuses in every string).
            if !input.trim().is_empty() && !input.contains('\0') {
                assert_eq!(
                    host_template::check(input),
                    Ok(()),
                    "the host refuses what the plugin accepts"
                );
            }
            let variables = vec![
                ("name".to_string(), "Ada King".to_string()),
                ("first_name".to_string(), String::new()),
            ];
            let _ = template_default::template::render(&parsed, &variables);
            let _ = template_default::render_message(input, &variables, true);
        }
    }
}

#[test]
fn template_parser() {
    fuzz("template", 5_000, template_input, |input: &String| {
        check_template(input)
    });
}

// ---------------------------------------------------------------- regressions

/// Inputs the fuzzer found, kept so they stay fixed.
#[test]
fn regressions() {
    for template in [
        // The host's check read the quoted `{{` as a second placeholder.
        "{{ a | default:\"{{\" }}",
        "default \"1{{ name | default:'}}' }}name_x.y-z|👋{{ name | default:'}}' }}{defaultupperloweréж",
    ] {
        check_template(template);
    }
}
