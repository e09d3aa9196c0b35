//! The printed tables: a row is the bench's own lead (round, server, ...) and then one
//! right-aligned figure per column.

/// A column: its header, width, decimals and how to read it from a run (`T`).
pub struct Column<T> {
    pub name: &'static str,
    pub width: usize,
    pub decimals: usize,
    pub get: fn(&T) -> f64,
}

impl<T> Column<T> {
    pub const fn new(
        name: &'static str,
        width: usize,
        decimals: usize,
        get: fn(&T) -> f64,
    ) -> Self {
        Column {
            name,
            width,
            decimals,
            get,
        }
    }
}

/// The columns of a table of runs `T`.
pub struct Table<T: 'static>(pub &'static [Column<T>]);

impl<T> Table<T> {
    /// The header line: `lead`, the headings of the bench's leading fields, then the columns'.
    pub fn header(&self, lead: String) -> String {
        let mut s = lead;
        for c in self.0 {
            s += &format!(" {:>w$}", c.name, w = c.width);
        }
        s
    }

    /// A row: `lead`, then `values` (one a column).
    pub fn row(&self, lead: String, values: &[f64]) -> String {
        let mut s = lead;
        for (c, v) in self.0.iter().zip(values) {
            s += &format!(" {v:>w$.d$}", w = c.width, d = c.decimals);
        }
        s
    }

    /// A run's value in each column.
    pub fn values(&self, run: &T) -> Vec<f64> {
        self.0.iter().map(|c| (c.get)(run)).collect()
    }

    /// Each column's median over `runs` (see [`median`](super::stats::median)).
    pub fn medians<'a>(&self, runs: impl IntoIterator<Item = &'a Vec<f64>>) -> Vec<f64> {
        let runs: Vec<&Vec<f64>> = runs.into_iter().collect();
        (0..self.0.len())
            .map(|i| super::stats::median(runs.iter().map(|v| v[i]).collect()))
            .collect()
    }
}
