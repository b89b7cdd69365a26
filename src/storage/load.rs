//! How a load combines a table's rows with new data: the column rules, the primary key,
//! `delete_where`, and the upsert.
//!
//! Without a primary key the data streams through. With one, the new rows are held in memory
//! (deduplicated: the later of two rows with the same key wins) while the table's own rows
//! stream past them; a kept row whose key comes again in the new data is replaced by it, so an
//! upsert moves the row to the end. The table's rows are never all in memory at once.

use std::collections::HashMap;
use std::io::Write;

use csv::StringRecord;

use super::rows::{RowWriter, SourceRows, StoredRows};
use super::{column_position, LoadRequest, StorageError, Table};

/// What a load wrote.
pub struct Merged {
    /// The table's columns after the load: its own, then the new ones in the data's order.
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
}

/// Writes the table's rows after the load to `out`: the kept rows of `table` (`kept`, given for
/// incremental loads of an existing table) and the rows of `source`.
///
/// Every column of the table must be in the data; the data's other columns are added (kept rows
/// get empty values in them). An existing table keeps its primary key: a load may give the same
/// one or none.
pub fn merge<W: Write>(
    request: &LoadRequest,
    table: Option<&Table>,
    kept: Option<StoredRows>,
    mut source: SourceRows,
    out: &mut RowWriter<W>,
) -> Result<Merged, StorageError> {
    let own: &[String] = table.map_or(&[], |t| &t.columns);
    // For each column of the result, where the data has it.
    let mut order = Vec::with_capacity(source.header.len());
    let mut missing = Vec::new();
    for column in own {
        match source.header.iter().position(|c| c == column) {
            Some(i) => order.push(i),
            None => missing.push(column.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(StorageError::MissingColumns {
            table: request.table_id.clone(),
            missing,
            expected: own.to_vec(),
        });
    }
    let mut columns = own.to_vec();
    for (i, column) in source.header.iter().enumerate() {
        if !own.contains(column) {
            order.push(i);
            columns.push(column.clone());
        }
    }

    let primary_key = match table {
        Some(table) if !request.primary_key.is_empty() && !same_key(table, request) => {
            return Err(StorageError::PrimaryKeyMismatch {
                table: table.id.clone(),
                table_key: table.primary_key.clone(),
                given: request.primary_key.clone(),
            });
        }
        Some(table) => table.primary_key.clone(),
        None => request.primary_key.clone(),
    };
    let position = |role, column: &str| column_position(&request.table_id, &columns, role, column);
    let key = primary_key
        .iter()
        .map(|column| position("primary key", column))
        .collect::<Result<Vec<usize>, _>>()?;
    let delete_where = match &request.delete_where {
        Some(filter) => Some((position("delete_where", &filter.column)?, filter)),
        None => None,
    };

    let mut record = StringRecord::new();
    // With a primary key: the new rows, in the result's column order, and where each key is.
    let mut new_rows: Vec<Vec<String>> = Vec::new();
    let mut by_key: HashMap<Vec<String>, usize> = HashMap::new();
    if !key.is_empty() {
        while source.next(&mut record)? {
            let row: Vec<String> = order.iter().map(|&i| record[i].to_string()).collect();
            let row_key: Vec<String> = key.iter().map(|&i| row[i].clone()).collect();
            match by_key.get(&row_key) {
                Some(&at) => new_rows[at] = row,
                None => {
                    by_key.insert(row_key, new_rows.len());
                    new_rows.push(row);
                }
            }
        }
    }

    out.header(columns.iter().map(String::as_str))?;
    if let Some(mut kept) = kept {
        let added = columns.len() - own.len();
        while kept.next(&mut record)? {
            let padded: Vec<&str> = record
                .iter()
                .chain(std::iter::repeat_n("", added))
                .collect();
            if delete_where.is_some_and(|(at, filter)| filter.matches(padded[at])) {
                continue;
            }
            if !key.is_empty() {
                let row_key: Vec<String> = key.iter().map(|&i| padded[i].to_string()).collect();
                if by_key.contains_key(&row_key) {
                    continue;
                }
            }
            out.row(padded.iter().copied())?;
        }
    }
    if key.is_empty() {
        while source.next(&mut record)? {
            out.row(order.iter().map(|&i| &record[i]))?;
        }
    } else {
        for row in &new_rows {
            out.row(row.iter().map(String::as_str))?;
        }
    }
    Ok(Merged {
        columns,
        primary_key,
    })
}

/// Whether the load gives the table's primary key (in any order).
fn same_key(table: &Table, request: &LoadRequest) -> bool {
    let mut own = table.primary_key.clone();
    let mut given = request.primary_key.clone();
    own.sort();
    given.sort();
    own == given
}
