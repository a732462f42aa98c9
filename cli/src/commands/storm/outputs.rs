//! The files a storm's results are written to (by `storm` and `merge`).

use std::path::PathBuf;

use anyhow::Context;

use super::document::StormDocument;
use super::html;
use super::report::{self, Summary};
use crate::commands::Failure;
use crate::output;

/// The files a storm's results can be written to (by `storm` and `merge`).
#[derive(clap::Args, Clone)]
pub struct Outputs {
    /// Write the results as JSON to this file (`-`: stdout); `flashtix
    /// merge` reads them back
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write one self-contained HTML page with the charts and tables
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Write the latency from the intended send of every attempt as an HDR
    /// percentile distribution (.hgrm, milliseconds)
    #[arg(long, value_name = "FILE.hgrm")]
    hdr: Option<PathBuf>,
    /// Write the per-second series as CSV: each second's sends, answers by
    /// outcome, and p50 and p99 from the intended send
    #[arg(long, value_name = "FILE.csv")]
    csv: Option<PathBuf>,
    /// Shade these time windows on the report's charts: a JSON list of
    /// {label, from, to} in seconds from the start (what `chaos` writes as it
    /// breaks things; read when the report is written)
    #[arg(long, hide = true, value_name = "FILE")]
    shade: Option<PathBuf>,
}

impl Outputs {
    /// A drill's fault windows, when the storm is one's.
    pub(super) fn shade(&self) -> Option<&std::path::Path> {
        self.shade.as_deref()
    }

    /// Writes the files asked for: JSON, HDR distribution, CSV, HTML report.
    pub(super) fn write(
        &self,
        title: &str,
        summary: &Summary,
        document: &StormDocument,
    ) -> Result<(), Failure> {
        if let Some(path) = &self.json {
            output::write_json(path, document)?;
        }
        if let Some(path) = &self.hdr {
            let text = report::hgrm(&summary.all_from_intended);
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &self.csv {
            let text = report::seconds_csv(&document.seconds);
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &self.report {
            let windows = match &self.shade {
                Some(shade) => flashtix_chaos::windows::read(shade).map_err(anyhow::Error::new)?,
                None => Vec::new(),
            };
            let page = html::Page {
                title: title.to_owned(),
                document,
                from_intended: &summary.all_from_intended,
                service: &summary.all_service,
                windows: &windows,
            };
            std::fs::write(path, page.render())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}
