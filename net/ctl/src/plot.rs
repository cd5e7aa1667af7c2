//! `rtctl latency SOURCE... --plot FILE.png`: the histograms as step lines
//! on log-log axes (samples per bucket over latency), several sources
//! overlaid with a legend, p99 (dashed) and max (solid) marked per source.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary by the `dejavu`
//! crate and handed to plotters' `ab_glyph` renderer, so the chart looks
//! the same on a machine without any font installed.

use std::path::Path;
use std::sync::Once;

use plotters::element::DashedPathElement;
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

/// The y value standing for an empty bucket: below one, the smallest
/// count, since a log axis has no zero.
const FLOOR: f64 = 0.5;

/// Colours of the overlaid sources, in order (Tango palette).
const PALETTE: [RGBColor; 6] = [
    RGBColor(52, 101, 164),
    RGBColor(204, 0, 0),
    RGBColor(78, 154, 6),
    RGBColor(245, 121, 0),
    RGBColor(117, 80, 123),
    RGBColor(193, 125, 17),
];

/// Writes the PNG chart of `histograms` (overlaid) to `path`.
pub fn write_png(histograms: &[Histogram], path: &Path) -> Result<()> {
    register_font();
    // The drawing library reports an unwritable file as a chain of its own
    // types; find out first, in words.
    std::fs::File::create(path).map_err(|error| {
        let text = error.to_string();
        let text = text.split(" (os error").next().unwrap_or(&text).to_lowercase();
        CtlError::Local(format!("cannot write plot {}: {text}", path.display()))
    })?;
    draw(histograms, path).map_err(|error| CtlError::Local(format!("cannot write plot {}: {error}", path.display())))
}

/// One source's bucket outline: runs of adjacent buckets, each a step line
/// rising from the floor at its first bucket's lower bound and falling back
/// at its last bucket's upper bound (x in ns, y in samples per bucket).
pub fn outline(histogram: &Histogram) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut previous_upper: Option<i64> = None;
    for &(upper, count) in &histogram.buckets {
        // The overflow bucket (past the histogram's range) ends at the
        // exact maximum.
        let (lower, upper) = if upper == i64::MAX {
            let lower = previous_upper.unwrap_or(0).max(1 << 36);
            (lower, histogram.max_ns.unwrap_or(lower).max(lower + 1))
        } else {
            (histogram.bucket_lower_bound(upper), upper)
        };
        let height = count as f64;
        match runs.last_mut() {
            Some(run) if previous_upper == Some(lower) => {
                run.push((lower as f64, height));
                run.push((upper as f64, height));
            }
            _ => {
                close(runs.last_mut());
                runs.push(vec![(lower as f64, FLOOR), (lower as f64, height), (upper as f64, height)]);
            }
        }
        previous_upper = Some(upper);
    }
    close(runs.last_mut());
    runs
}

/// Ends a run of buckets back on the floor.
fn close(run: Option<&mut Vec<(f64, f64)>>) {
    if let Some(run) = run
        && let Some(&(x, _)) = run.last()
    {
        run.push((x, FLOOR));
    }
}

fn draw(histograms: &[Histogram], path: &Path) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let outlines: Vec<Vec<Vec<(f64, f64)>>> = histograms.iter().map(outline).collect();
    let points = || outlines.iter().flatten().flatten();
    let markers = histograms.iter().flat_map(|histogram| [histogram.p99_ns, histogram.max_ns]).flatten().map(|ns| ns as f64);
    let xs: Vec<f64> = points().map(|&(x, _)| x).chain(markers).collect();
    let left = xs.iter().copied().fold(f64::INFINITY, f64::min).max(1.0);
    let right = xs.iter().copied().fold(0.0, f64::max).max(left * 2.0);
    let largest = points().map(|&(_, y)| y).fold(1.0, f64::max);
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let names: Vec<&str> = histograms.iter().map(|histogram| histogram.source.as_str()).collect();
    let total: i64 = histograms.iter().map(|histogram| histogram.count.unwrap_or(0)).sum();
    let caption = format!("latency of {}: {total} samples", names.join(", "));
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 22))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(72)
        .build_cartesian_2d((left / 1.25..right * 1.25).log_scale(), (FLOOR..largest * 12.0).log_scale())?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x: &f64| format::duration_ns(x.round() as i64))
        .y_label_formatter(&|y: &f64| {
            if *y >= 1.0 { format!("{}", y.round() as i64) } else { String::new() }
        })
        .x_desc("latency (log scale)")
        .y_desc("samples per bucket (log scale)")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    // Headroom of a decade above the fullest bucket holds the legend and
    // the marker names (p99 higher than max, so that close ones stay apart).
    let (p99_top, max_top) = (largest * 4.0, largest * 2.0);
    for (index, (histogram, runs)) in histograms.iter().zip(&outlines).enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        let style = colour.stroke_width(2);
        let label = format!(
            "{}: p99 {}, max {}",
            histogram.source,
            histogram.p99_ns.map_or_else(|| "-".into(), format::duration_ns),
            histogram.max_ns.map_or_else(|| "-".into(), format::duration_ns),
        );
        chart
            .draw_series(runs.iter().map(|run| PathElement::new(run.clone(), style)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        // p99: dashed; max: solid and thin; each named at the top.
        if let Some(p99) = histogram.p99_ns {
            let x = p99 as f64;
            chart.draw_series(std::iter::once(DashedPathElement::new(vec![(x, FLOOR), (x, p99_top)], 6, 4, colour.stroke_width(1))))?;
            chart.draw_series(std::iter::once(Text::new("p99", (x, p99_top), (FONT, 13).into_font().color(&colour))))?;
        }
        if let Some(max) = histogram.max_ns {
            let x = max as f64;
            chart.draw_series(std::iter::once(PathElement::new(vec![(x, FLOOR), (x, max_top)], colour.stroke_width(1))))?;
            chart.draw_series(std::iter::once(Text::new("max", (x, max_top), (FONT, 13).into_font().color(&colour))))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_linear(buckets: &[(i64, i64)]) -> Histogram {
        Histogram { source: "rt0".into(), sub_buckets: Some(32), buckets: buckets.to_vec(), ..Histogram::default() }
    }

    #[test]
    fn adjacent_buckets_form_one_step_line_and_gaps_drop_to_the_floor() {
        // [992, 1008) and [1008, 1024) touch; [4992, 5120) stands apart.
        let runs = outline(&log_linear(&[(1008, 2), (1024, 5), (5120, 1)]));
        assert_eq!(
            runs,
            vec![
                vec![(992.0, FLOOR), (992.0, 2.0), (1008.0, 2.0), (1008.0, 5.0), (1024.0, 5.0), (1024.0, FLOOR)],
                vec![(4992.0, FLOOR), (4992.0, 1.0), (5120.0, 1.0), (5120.0, FLOOR)],
            ]
        );
    }

    #[test]
    fn several_sources_are_drawn_into_one_png() {
        let mut first = log_linear(&[(1008, 2), (1024, 5), (5120, 1)]);
        first.p99_ns = Some(5000);
        first.max_ns = Some(5100);
        first.count = Some(8);
        let mut second = log_linear(&[(66, 1), (100_352, 3)]);
        second.source = "softirq.latency".into();
        second.p99_ns = Some(99_000);
        second.max_ns = Some(100_000);
        let path = std::env::temp_dir().join(format!("rtctl-plot-test-{}.png", std::process::id()));
        write_png(&[first, second], &path).expect("the chart is drawn");
        let png = std::fs::read(&path).expect("the chart is written");
        let _ = std::fs::remove_file(&path);
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000);
    }
}
