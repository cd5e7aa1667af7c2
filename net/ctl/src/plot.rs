//! `rtctl latency SOURCE --plot FILE.png`: a bar chart of the histogram.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary by the `dejavu`
//! crate and handed to plotters' `ab_glyph` renderer, so the chart looks
//! the same on a machine without any font installed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{CtlError, Result};
use crate::format;
use crate::latency::Histogram;

/// The family name the chart asks for.
const FONT: &str = "sans-serif";

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The bytes are a valid TTF shipped by the crate; if they were not,
        // text would be missing and plotters would report it when drawing.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Writes the PNG bar chart of `histogram` to `path`.
pub fn write_png(histogram: &Histogram, path: &Path) -> Result<()> {
    register_font();
    // The drawing library reports an unwritable file as a chain of its own
    // types; find out first, in words.
    std::fs::File::create(path).map_err(|error| {
        let text = error.to_string();
        let text = text.split(" (os error").next().unwrap_or(&text).to_lowercase();
        CtlError::Local(format!("cannot write plot {}: {text}", path.display()))
    })?;
    draw(histogram, path)
        .map_err(|error| CtlError::Local(format!("cannot write plot {}: {error}", path.display())))
}

fn draw(histogram: &Histogram, path: &Path) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let buckets = histogram.filled_buckets();
    let bars = i32::try_from(buckets.len()).unwrap_or(i32::MAX).max(1);
    let width = u32::try_from(bars)
        .unwrap_or(1)
        .saturating_mul(56)
        .saturating_add(160)
        .max(800);
    let root = BitMapBackend::new(path, (width, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let largest = buckets
        .iter()
        .map(|(_, count)| *count)
        .max()
        .unwrap_or(0)
        .max(1);
    let count = histogram
        .count
        .unwrap_or_else(|| buckets.iter().map(|(_, count)| *count).sum());
    let caption = format!("latency of {}: {count} samples", histogram.source);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 24))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(72)
        .build_cartesian_2d(
            (0..bars).into_segmented(),
            0i64..largest.saturating_add(largest / 10 + 1),
        )?;
    let labels: Vec<String> = buckets
        .iter()
        .map(|(bound, _)| format::duration_ns(*bound))
        .collect();
    let label_of = |value: &SegmentValue<i32>| match value {
        SegmentValue::CenterOf(index) => usize::try_from(*index)
            .ok()
            .and_then(|index| labels.get(index))
            .cloned()
            .unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(buckets.len().max(1))
        .x_label_formatter(&label_of)
        .x_desc("latency (bucket upper bound)")
        .y_desc("count")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    chart.draw_series(buckets.iter().zip(0..).map(|((_, count), index)| {
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(index), 0),
                (SegmentValue::Exact(index + 1), *count),
            ],
            RGBColor(52, 101, 164).filled(),
        );
        bar.set_margin(0, 0, 4, 4);
        bar
    }))?;
    root.present()?;
    Ok(())
}
