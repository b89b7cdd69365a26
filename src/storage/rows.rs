//! CSV as Storage reads and writes it: the rows of a load's source (a file, a folder of headless
//! slices, or bytes) in its dialect, and the stored format (RFC 4180, `,`, every value in `"`,
//! `\n` line ends, a header) that table data files and exports use.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use csv::StringRecord;

use super::{LoadSource, StorageError, Table};

/// A delimiter and an optional enclosure, both single ASCII characters.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    delimiter: u8,
    enclosure: Option<u8>,
}

impl Dialect {
    pub fn new(delimiter: char, enclosure: Option<char>) -> Result<Dialect, StorageError> {
        let byte = |what: &'static str, c: char| {
            let bad = |reason| StorageError::Dialect {
                what,
                given: c.to_string(),
                reason,
            };
            if !c.is_ascii() {
                return Err(bad("it must be a single ASCII character"));
            }
            if matches!(c, '\n' | '\r') {
                return Err(bad("line ends cannot separate values"));
            }
            Ok(c as u8)
        };
        let delimiter = byte("delimiter", delimiter)?;
        let enclosure = enclosure.map(|c| byte("enclosure", c)).transpose()?;
        if enclosure == Some(delimiter) {
            return Err(StorageError::Dialect {
                what: "enclosure",
                given: (delimiter as char).to_string(),
                reason: "it must differ from the delimiter",
            });
        }
        Ok(Dialect {
            delimiter,
            enclosure,
        })
    }

    fn reader<R: Read>(self, input: R) -> csv::Reader<R> {
        let mut builder = csv::ReaderBuilder::new();
        builder
            .has_headers(false)
            .flexible(true)
            .delimiter(self.delimiter);
        match self.enclosure {
            Some(quote) => builder.quote(quote),
            None => builder.quoting(false),
        };
        builder.from_reader(input)
    }
}

/// The rows of a load's data, one part (file, slice or upload) after the other; every row has
/// as many values as `header` has columns.
pub struct SourceRows {
    /// The columns of the data: its first line, or the columns the load gives.
    pub header: Vec<String>,
    /// What the data is, for messages.
    pub name: String,
    dialect: Dialect,
    waiting: VecDeque<Part>,
    current: Option<(String, csv::Reader<Box<dyn Read>>)>,
}

/// One part of a source, opened only when its turn comes.
enum Part {
    File(PathBuf),
    Bytes(Bytes),
}

impl SourceRows {
    /// Opens the source and reads its header, unless `columns` gives it (the data is headless
    /// then). A folder is a sliced table: its files (hidden ones aside) in name order, headless.
    pub fn open(
        source: &LoadSource,
        columns: Option<&[String]>,
        dialect: Dialect,
    ) -> Result<SourceRows, StorageError> {
        let (name, parts) = match source {
            LoadSource::Bytes(bytes) => (
                "the uploaded data".to_string(),
                vec![Part::Bytes(bytes.clone())],
            ),
            LoadSource::Path(path) if path.is_dir() => {
                (format!("sliced table {}", path.display()), slices(path)?)
            }
            LoadSource::Path(path) => (path.display().to_string(), vec![Part::File(path.clone())]),
        };
        let mut rows = SourceRows {
            header: Vec::new(),
            name,
            dialect,
            waiting: parts.into(),
            current: None,
        };
        match columns {
            Some(columns) => rows.header = columns.to_vec(),
            None if matches!(source, LoadSource::Path(path) if path.is_dir()) => {
                return Err(StorageError::NoColumns {
                    source_name: rows.name,
                });
            }
            None => {
                let mut first = StringRecord::new();
                if !rows.read(&mut first)? {
                    return Err(StorageError::Csv {
                        source_name: rows.name,
                        detail: "it is empty, but its first line must be the header".to_string(),
                    });
                }
                rows.header = first.iter().map(str::to_string).collect();
                if let Some(column) = rows.header.first_mut() {
                    // A UTF-8 byte order mark is no part of the first column's name.
                    *column = column.trim_start_matches('\u{feff}').to_string();
                }
            }
        }
        if rows.header.is_empty() {
            return Err(StorageError::NoColumns {
                source_name: rows.name,
            });
        }
        Ok(rows)
    }

    /// Reads the next row into `record`; `false` after the last row of the last part.
    pub fn next(&mut self, record: &mut StringRecord) -> Result<bool, StorageError> {
        if !self.read(record)? {
            return Ok(false);
        }
        if record.len() != self.header.len() {
            let part = self.current.as_ref().map_or(&self.name, |(name, _)| name);
            let line = record.position().map_or(0, |p| p.line());
            return Err(StorageError::Csv {
                source_name: part.clone(),
                detail: format!(
                    "line {line} has {} values, but there are {} columns ({})",
                    record.len(),
                    self.header.len(),
                    self.header.join(",")
                ),
            });
        }
        Ok(true)
    }

    /// The next record of any length, moving on to the next part at the end of one.
    fn read(&mut self, record: &mut StringRecord) -> Result<bool, StorageError> {
        loop {
            if let Some((name, reader)) = &mut self.current {
                match reader.read_record(record) {
                    Ok(true) => return Ok(true),
                    Ok(false) => self.current = None,
                    Err(error) => return Err(csv_error(name, error)),
                }
            }
            let Some(part) = self.waiting.pop_front() else {
                return Ok(false);
            };
            let (name, input): (String, Box<dyn Read>) = match part {
                Part::Bytes(bytes) => (self.name.clone(), Box::new(std::io::Cursor::new(bytes))),
                Part::File(path) => {
                    let file = File::open(&path).map_err(|source| StorageError::Source {
                        path: path.clone(),
                        source,
                    })?;
                    (path.display().to_string(), Box::new(file))
                }
            };
            self.current = Some((name, self.dialect.reader(input)));
        }
    }
}

/// The slices of a sliced table: every file of the folder but hidden ones, in name order.
fn slices(folder: &Path) -> Result<Vec<Part>, StorageError> {
    let unreadable = |source| StorageError::Source {
        path: folder.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        paths.push(entry.path());
    }
    paths.sort();
    Ok(paths.into_iter().map(Part::File).collect())
}

fn csv_error(source_name: &str, error: csv::Error) -> StorageError {
    let detail = match error.position() {
        Some(position) => {
            let text = error.to_string();
            // csv's own text starts with the position; say it the way the rest of our messages do.
            let cause = text.rsplit("): ").next().unwrap_or(&text).to_string();
            format!("line {}: {cause}", position.line())
        }
        None => error.to_string(),
    };
    StorageError::Csv {
        source_name: source_name.to_string(),
        detail,
    }
}

/// The rows of a table's data file, after its header (which must be the table's columns).
pub struct StoredRows {
    reader: csv::Reader<File>,
    table: String,
    width: usize,
}

impl StoredRows {
    pub fn open(path: &Path, table: &Table) -> Result<StoredRows, StorageError> {
        let file = File::open(path).map_err(|source| StorageError::Io {
            action: "opening the data file",
            path: path.to_path_buf(),
            source,
        })?;
        let mut rows = StoredRows {
            reader: Dialect::new(',', Some('"'))?.reader(file),
            table: table.id.clone(),
            width: table.columns.len(),
        };
        let mut header = StringRecord::new();
        if !rows.next(&mut header)? || header.iter().ne(table.columns.iter()) {
            return Err(rows.corrupt(format!("its header is not {}", table.columns.join(","))));
        }
        Ok(rows)
    }

    /// Reads the next row into `record`; `false` after the last.
    pub fn next(&mut self, record: &mut StringRecord) -> Result<bool, StorageError> {
        match self.reader.read_record(record) {
            Ok(false) => Ok(false),
            Ok(true) if record.len() == self.width => Ok(true),
            Ok(true) => Err(self.corrupt(format!(
                "a row has {} values instead of {}",
                record.len(),
                self.width
            ))),
            Err(error) => Err(self.corrupt(error.to_string())),
        }
    }

    fn corrupt(&self, detail: String) -> StorageError {
        StorageError::Corrupt {
            table: self.table.clone(),
            detail,
        }
    }
}

/// Writes the stored format to `W`, counting rows (the header aside) and bytes.
pub struct RowWriter<W: Write> {
    csv: csv::Writer<Counting<W>>,
    rows: u64,
    fail: Box<dyn Fn(std::io::Error) -> StorageError>,
}

impl<W: Write> RowWriter<W> {
    /// `fail` turns a write error into the caller's error.
    pub fn new(output: W, fail: impl Fn(std::io::Error) -> StorageError + 'static) -> RowWriter<W> {
        let csv = csv::WriterBuilder::new()
            .quote_style(csv::QuoteStyle::Always)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Counting {
                inner: output,
                bytes: 0,
            });
        RowWriter {
            csv,
            rows: 0,
            fail: Box::new(fail),
        }
    }

    /// Writes the header line (not counted as a row).
    pub fn header<'a>(
        &mut self,
        columns: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StorageError> {
        self.write(columns)
    }

    pub fn row<'a>(
        &mut self,
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StorageError> {
        self.write(values)?;
        self.rows += 1;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes and returns the output with the number of rows and of bytes written.
    pub fn finish(self) -> Result<(W, u64, u64), StorageError> {
        let fail = self.fail;
        let counting = self
            .csv
            .into_inner()
            .map_err(|error| fail(error.into_error()))?;
        Ok((counting.inner, self.rows, counting.bytes))
    }

    fn write<'a>(&mut self, values: impl IntoIterator<Item = &'a str>) -> Result<(), StorageError> {
        self.csv
            .write_record(values)
            .map_err(|error| (self.fail)(error.into()))
    }
}

struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
