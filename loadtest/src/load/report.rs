//! `loadtest report`: renders a results file as one self-contained HTML page: charts
//! drawn here with the `plotters` SVG backend and inlined (latency percentiles over
//! time, throughput, status mix, edge hit share, writer and reader lag, CPU per
//! component, and for a ramp latency against rate), then the same figures as tables.
//!
//! What must hold: the page needs nothing but itself (no scripts, no external files);
//! every chart has a title and a legend; text from the results file is escaped; an
//! empty series or a run without observations renders as "no data", never a failure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotters::prelude::*;

use super::results::{Figures, Results};

/// Chart size in pixels.
const SIZE: (u32, u32) = (660, 300);

/// A named series of points.
type Series = (String, Vec<(f64, f64)>);

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How a chart's y axis is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scale {
    /// Evenly spaced values from zero (or the lowest value).
    Linear,
    /// Decades evenly spaced: latencies spanning 1 ms to seconds stay readable at both
    /// ends. Only positive values can be drawn; the others are left out.
    Log,
}

/// A line chart as an SVG document.
fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    chart(title, x_label, y_label, series, Scale::Linear)
}

/// A line chart with a logarithmic y axis (latencies).
fn log_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    chart(title, x_label, y_label, series, Scale::Log)
}

fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series], scale: Scale) -> String {
    let kept: Vec<Series> = series
        .iter()
        .map(|(name, points)| {
            let points = points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .filter(|p| scale == Scale::Linear || p.1 > 0.0)
                .collect();
            (name.clone(), points)
        })
        .filter(|(_, p): &Series| !p.is_empty())
        .collect();
    if kept.is_empty() {
        return format!(
            "<div class=\"empty\"><b>{}</b><br>no data</div>",
            escape(title)
        );
    }
    let points = || kept.iter().flat_map(|(_, p)| p.iter());
    let x_max = points().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let x_min = points()
        .map(|p| p.0)
        .fold(f64::INFINITY, f64::min)
        .min(x_max - 1.0);
    let y_top = points().map(|p| p.1).fold(0.0, f64::max);
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(title, ("sans-serif", 17))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(58);
        match scale {
            Scale::Linear => {
                let y_min = points().map(|p| p.1).fold(0.0, f64::min);
                let y_max = if y_top <= y_min {
                    y_min + 1.0
                } else {
                    y_top * 1.08
                };
                let mut chart = builder.build_cartesian_2d(x_min..x_max, y_min..y_max)?;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc(y_label)
                    .light_line_style(RGBColor(235, 235, 235))
                    .draw()?;
                draw_lines(&mut chart, &kept)?;
            }
            Scale::Log => {
                let y_low = points().map(|p| p.1).fold(f64::INFINITY, f64::min);
                // Whole decades around the data, so the ticks are 1, 10, 100, ...
                let y_min = 10f64.powf(y_low.log10().floor());
                let y_max = 10f64.powf(y_top.log10().ceil()).max(y_min * 10.0);
                let mut chart =
                    builder.build_cartesian_2d(x_min..x_max, (y_min..y_max).log_scale())?;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc(format!("{y_label} (log scale)"))
                    .y_label_formatter(&|v| {
                        if *v >= 1.0 {
                            format!("{v:.0}")
                        } else {
                            format!("{v}")
                        }
                    })
                    .light_line_style(RGBColor(235, 235, 235))
                    .draw()?;
                draw_lines(&mut chart, &kept)?;
            }
        }
        root.present()?;
        Ok(())
    })();
    match drawn {
        Ok(()) => svg,
        Err(e) => format!(
            "<div class=\"empty\"><b>{}</b><br>could not draw: {}</div>",
            escape(title),
            escape(&e.to_string())
        ),
    }
}

/// The series as lines with a legend, on a chart of any y scale.
fn draw_lines<'a, Y>(
    chart: &mut ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    series: &[Series],
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64>,
{
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(190, 190, 190))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| e.to_string())
}

/// Status groups, in the order the status mix shows them.
const STATUS_GROUPS: [&str; 6] = ["2xx", "304", "429", "other 4xx", "5xx", "failed"];

fn status_group(status: &str) -> &'static str {
    match status {
        "304" => "304",
        "429" => "429",
        "failed" => "failed",
        s if s.starts_with('2') => "2xx",
        s if s.starts_with('4') => "other 4xx",
        s if s.starts_with('5') => "5xx",
        _ => "other 4xx",
    }
}

fn grouped_status(f: &Figures) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for (k, v) in &f.status {
        *out.entry(status_group(k)).or_default() += v;
    }
    out
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The page.
pub fn render(results: &Results) -> String {
    let classes = results.classes();
    let per_class = |class: &str| -> Vec<(f64, &Figures)> {
        results
            .timeline
            .iter()
            .filter(|s| s.class == class)
            .map(|s| (f64::from(s.t), &s.figures))
            .collect()
    };
    let all = per_class("all");

    let mut charts = Vec::new();
    // Latency percentiles of all requests, then p99 per class.
    let mut latency: Vec<Series> = [("p50", 0), ("p90", 1), ("p99", 2), ("p99.9", 3)]
        .iter()
        .map(|(name, which)| {
            let points = all
                .iter()
                .filter(|(_, f)| f.requests > 0)
                .map(|(t, f)| {
                    let l = f.latency;
                    (*t, [l.p50, l.p90, l.p99, l.p999][*which])
                })
                .collect();
            ((*name).to_owned(), points)
        })
        .collect();
    latency.truncate(4);
    charts.push(log_chart(
        "Latency percentiles, all requests (from due time)",
        "seconds",
        "ms",
        &latency,
    ));
    let p99s: Vec<Series> = classes
        .iter()
        .map(|c| {
            let points = per_class(c.as_str())
                .iter()
                .filter(|(_, f)| f.requests > 0)
                .map(|(t, f)| (*t, f.latency.p99))
                .collect();
            (c.as_str().to_owned(), points)
        })
        .collect();
    charts.push(log_chart("p99 latency per class", "seconds", "ms", &p99s));
    // Throughput per class and the arrival rate asked for.
    let mut throughput: Vec<Series> = classes
        .iter()
        .map(|c| {
            let points = per_class(c.as_str())
                .iter()
                .map(|(t, f)| (*t, f.requests as f64))
                .collect();
            (c.as_str().to_owned(), points)
        })
        .collect();
    throughput.push((
        "all".into(),
        all.iter().map(|(t, f)| (*t, f.requests as f64)).collect(),
    ));
    let mut asked = Vec::new();
    for phase in &results.phases {
        asked.push((phase.start, phase.rate));
        asked.push((phase.start + phase.secs, phase.rate));
    }
    throughput.push(("arrival rate".into(), asked));
    charts.push(line_chart(
        "Throughput (answers per second, by due second)",
        "seconds",
        "requests/s",
        &throughput,
    ));
    // Status mix.
    let mix: Vec<Series> = STATUS_GROUPS
        .iter()
        .map(|group| {
            let points = all
                .iter()
                .filter(|(_, f)| f.requests > 0)
                .map(|(t, f)| {
                    let g = grouped_status(f);
                    (*t, pct(g.get(group).copied().unwrap_or(0), f.requests))
                })
                .collect::<Vec<_>>();
            let seen = points.iter().any(|(_, v)| *v > 0.0);
            ((*group).to_owned(), if seen { points } else { Vec::new() })
        })
        .collect();
    charts.push(line_chart(
        "Status mix, all requests",
        "seconds",
        "% of answers",
        &mix,
    ));
    // Edge hit share.
    let mut hits: Vec<Series> = vec![(
        "all".into(),
        all.iter()
            .filter_map(|(t, f)| f.hit_share().map(|h| (*t, h * 100.0)))
            .collect(),
    )];
    for c in &classes {
        hits.push((
            c.as_str().to_owned(),
            per_class(c.as_str())
                .iter()
                .filter_map(|(t, f)| f.hit_share().map(|h| (*t, h * 100.0)))
                .collect(),
        ));
    }
    charts.push(line_chart(
        "Edge cache hit share (X-Cache-Status HIT/STALE/UPDATING/REVALIDATED)",
        "seconds",
        "% of answers",
        &hits,
    ));
    // Lags.
    let obs = &results.observations;
    let lags: Vec<Series> = vec![
        (
            "writer behind RPC".into(),
            obs.iter()
                .filter_map(|o| o.writer_lag().map(|l| (o.t, l as f64)))
                .collect(),
        ),
        (
            "readers (replica) behind writer".into(),
            obs.iter()
                .filter_map(|o| o.reader_lag().map(|l| (o.t, l as f64)))
                .collect(),
        ),
    ];
    charts.push(line_chart("Lag", "seconds", "ledgers", &lags));
    // CPU.
    let mut components: Vec<String> = obs.iter().flat_map(|o| o.cpu.keys().cloned()).collect();
    components.sort();
    components.dedup();
    let cpu: Vec<Series> = components
        .iter()
        .map(|name| {
            (
                name.clone(),
                obs.iter()
                    .filter_map(|o| o.cpu.get(name).map(|c| (o.t, *c)))
                    .collect(),
            )
        })
        .collect();
    charts.push(line_chart(
        "CPU per component",
        "seconds",
        "% of one core",
        &cpu,
    ));
    // Ramp: p99 against rate.
    let ramp_kinds = ["ramp", "ceiling"];
    if results
        .phases
        .iter()
        .any(|p| ramp_kinds.contains(&p.kind.as_str()))
    {
        let series: Vec<Series> = ramp_kinds
            .iter()
            .map(|kind| {
                let name = if *kind == "ramp" {
                    "model mix"
                } else {
                    "/constant (edge ceiling)"
                };
                (
                    name.to_owned(),
                    results
                        .phases
                        .iter()
                        .filter(|p| p.kind == *kind)
                        .map(|p| (p.rate, p.all.latency.p99))
                        .collect(),
                )
            })
            .collect();
        charts.push(log_chart(
            "Ramp: p99 latency against arrival rate",
            "arrival rate (requests/s)",
            "p99 ms",
            &series,
        ));
    }

    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Load test report</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222;max-width:1380px}}\
         h1{{font-size:24px}} h2{{font-size:19px;margin-top:28px}}\
         .charts{{display:flex;flex-wrap:wrap;gap:12px}}\
         .charts>svg,.charts>div{{border:1px solid #ddd}}\
         .empty{{width:{w}px;height:{h}px;display:flex;align-items:center;justify-content:center;flex-direction:column;color:#888}}\
         table{{border-collapse:collapse;margin:8px 0;font-size:13px}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         th{{background:#f3f3f3}} td:first-child,th:first-child{{text-align:left}}\
         .good{{color:#186a1a}} .bad{{color:#a11}} .note{{color:#555;font-size:14px}}\
         </style></head><body>\n",
        w = SIZE.0,
        h = SIZE.1
    );
    let _ = writeln!(
        html,
        "<h1>Load test report</h1><p class=\"note\">Target {} &middot; started at unix time {} &middot; {}</p>",
        escape(&results.target),
        results.started_unix,
        escape(&results.notes)
    );
    if let Some(knee) = &results.knee {
        let _ = writeln!(
            html,
            "<p><b>Knee:</b> highest good arrival rate of the mix {} requests/s; \
             <code>/constant</code> through the same edge {} requests/s; \
             <b>ratio {}</b>. Good step: {}.</p>",
            opt(knee.mix_rate, 0),
            opt(knee.ceiling_rate, 0),
            opt(knee.ratio, 3),
            escape(&knee.criterion)
        );
    }
    let s = &results.streams;
    let _ = writeln!(
        html,
        "<p>Event streams: {} of {} opened ({} failed openings), {} events received.</p>",
        s.opened, s.wanted, s.failed, s.events
    );
    html.push_str("<div class=\"charts\">\n");
    for chart in charts {
        html.push_str(&chart);
        html.push('\n');
    }
    html.push_str("</div>\n");

    // Tables.
    html.push_str(
        "<h2>Phases</h2><table><tr><th>phase</th><th>rate/s</th><th>answers/s</th>\
         <th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th>\
         <th>errors</th><th>edge hits</th><th>2xx</th><th>304</th><th>429</th>\
         <th>other 4xx</th><th>5xx</th><th>failed</th><th>verdict</th></tr>\n",
    );
    for p in &results.phases {
        let g = grouped_status(&p.all);
        let l = p.all.latency;
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.1}</td><td>{:.1}</td>\
             <td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td>",
            escape(&p.kind),
            p.rate,
            p.throughput,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            p.all.errors,
            opt(p.all.hit_share().map(|h| h * 100.0), 1) + "%",
        );
        for group in STATUS_GROUPS {
            let _ = write!(
                html,
                "<td>{:.1}%</td>",
                pct(g.get(group).copied().unwrap_or(0), p.all.requests)
            );
        }
        let _ = writeln!(
            html,
            "<td class=\"{}\">{}</td></tr>",
            if p.good { "good" } else { "bad" },
            if p.good { "good" } else { "not good" }
        );
    }
    html.push_str("</table>\n");

    html.push_str(
        "<h2>Per class</h2><table><tr><th>phase</th><th>class</th><th>answers</th>\
         <th>p50 ms</th><th>p99 ms</th><th>max ms</th><th>errors</th><th>edge hits</th>\
         <th>statuses</th></tr>\n",
    );
    for p in &results.phases {
        for (class, f) in &p.classes {
            let statuses: Vec<String> = f.status.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(
                html,
                "<tr><td>{} {:.0}/s</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td>\
                 <td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&p.kind),
                p.rate,
                escape(class),
                f.requests,
                f.latency.p50,
                f.latency.p99,
                f.latency.max,
                f.errors,
                opt(f.hit_share().map(|h| h * 100.0), 1) + "%",
                escape(&statuses.join(", "))
            );
        }
    }
    html.push_str("</table>\n");

    html.push_str(
        "<h2>Stack</h2><table><tr><th>component</th><th>mean CPU % of a core</th>\
         <th>max CPU %</th></tr>\n",
    );
    for name in &components {
        let values: Vec<f64> = obs
            .iter()
            .filter_map(|o| o.cpu.get(name).copied())
            .collect();
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let max = values.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{mean:.1}</td><td>{max:.1}</td></tr>",
            escape(name)
        );
    }
    html.push_str("</table>\n<table><tr><th>lag</th><th>mean</th><th>max</th></tr>\n");
    for (name, values) in [
        (
            "writer behind RPC (ledgers)",
            obs.iter()
                .filter_map(|o| o.writer_lag())
                .collect::<Vec<_>>(),
        ),
        (
            "readers behind writer (ledgers)",
            obs.iter().filter_map(|o| o.reader_lag()).collect(),
        ),
    ] {
        let mean = values.iter().sum::<i64>() as f64 / values.len().max(1) as f64;
        let max = values.iter().copied().max();
        let _ = writeln!(
            html,
            "<tr><td>{name}</td><td>{}</td><td>{}</td></tr>",
            if values.is_empty() {
                "-".to_owned()
            } else {
                format!("{mean:.1}")
            },
            max.map_or_else(|| "-".to_owned(), |m| m.to_string())
        );
    }
    html.push_str("</table>\n");
    let _ = writeln!(
        html,
        "<h2>Traffic model</h2><pre>{}</pre></body></html>",
        escape(&toml::to_string(&results.model).unwrap_or_default())
    );
    html
}

#[cfg(test)]
mod tests {
    use super::super::model::TrafficModel;
    use super::super::results::{Knee, Observation, Phase, Second, StreamSummary};
    use super::*;

    fn figures(requests: u64, p99: f64, hits: u64) -> Figures {
        let mut f = Figures {
            requests,
            ..Figures::default()
        };
        f.status.insert("200".into(), requests - 2);
        f.status.insert("429".into(), 2);
        f.cache.insert("HIT".into(), hits);
        f.cache.insert("MISS".into(), requests - hits);
        f.latency.p50 = p99 / 4.0;
        f.latency.p99 = p99;
        f
    }

    fn results() -> Results {
        let mut timeline = Vec::new();
        let mut observations = Vec::new();
        for t in 0..20u32 {
            for class in ["wallet", "explorer", "all"] {
                timeline.push(Second {
                    t,
                    class: class.into(),
                    figures: figures(100 + u64::from(t), 5.0 + f64::from(t), 40),
                });
            }
            let mut cpu = BTreeMap::new();
            cpu.insert("readers".to_owned(), 50.0 + f64::from(t));
            cpu.insert("postgres primary".to_owned(), 20.0);
            observations.push(Observation {
                t: f64::from(t),
                writer_last: Some(1000 + t),
                rpc_latest: Some(1001 + t),
                reader_latest: Some(999 + t),
                cpu,
                stream_events: 3,
                streams_open: 2,
            });
        }
        let phase = |kind: &str, rate: f64, p99: f64| Phase {
            kind: kind.into(),
            rate,
            start: 0.0,
            secs: 10.0,
            classes: BTreeMap::from([("wallet".to_owned(), figures(500, p99, 100))]),
            all: figures(1000, p99, 200),
            throughput: rate,
            good: p99 < 100.0,
        };
        Results {
            target: "http://127.0.0.1:1 <edge>".into(),
            started_unix: 1,
            notes: "2 cores & others".into(),
            p99_limit_ms: 100.0,
            model: TrafficModel::builtin(),
            phases: vec![
                phase("ramp", 100.0, 10.0),
                phase("ramp", 140.0, 150.0),
                phase("ceiling", 100.0, 2.0),
                phase("ceiling", 140.0, 200.0),
            ],
            timeline,
            observations,
            streams: StreamSummary {
                wanted: 2,
                opened: 2,
                failed: 0,
                events: 60,
            },
            knee: Some(Knee {
                criterion: "p99 < 100 ms".into(),
                mix_rate: Some(100.0),
                ceiling_rate: Some(100.0),
                ratio: Some(1.0),
            }),
        }
    }

    #[test]
    fn the_report_is_one_page_with_every_chart_and_table() {
        let html = render(&results());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        // Eight charts drawn as inline SVG, none missing for lack of data.
        assert_eq!(html.matches("<svg").count(), 8, "{html}");
        assert_eq!(html.matches("</svg>").count(), 8);
        assert!(!html.contains("no data"));
        assert!(!html.contains("could not draw"));
        for title in [
            "Latency percentiles",
            "p99 latency per class",
            "Throughput",
            "Status mix",
            "Edge cache hit share",
            "Lag",
            "CPU per component",
            "Ramp: p99 latency against arrival rate",
        ] {
            assert!(html.contains(title), "no chart {title}");
        }
        // Nothing external, and text from the file escaped.
        assert!(!html.contains("<script") && !html.contains("src=\"http"));
        assert!(html.contains("&lt;edge&gt;") && html.contains("2 cores &amp; others"));
        assert!(html.contains("ratio 1.000"));
        assert!(html.contains("postgres primary"));
        assert!(html.contains("<td class=\"bad\">not good</td>"));
        // Every tag opened in a table is closed.
        assert_eq!(
            html.matches("<table>").count(),
            html.matches("</table>").count()
        );
        assert_eq!(html.matches("<tr>").count(), html.matches("</tr>").count());
    }

    #[test]
    fn a_run_without_observations_renders_with_empty_charts() {
        let mut r = results();
        r.observations.clear();
        r.timeline.clear();
        r.phases.clear();
        r.knee = None;
        let html = render(&r);
        assert!(html.contains("no data"));
        assert!(html.ends_with("</html>\n"));
    }

    #[test]
    fn latency_charts_use_a_log_axis_in_whole_decades() {
        let series = vec![(
            "p99".to_owned(),
            vec![(0.0, 0.0), (1.0, 2.5), (2.0, 40.0), (3.0, 1300.0)],
        )];
        let svg = log_chart("latency", "seconds", "ms", &series).replace('\n', "");
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("ms (log scale)"));
        // 1 ms to 10 s: the decade ticks are labelled, the zero point is left out.
        for tick in [">1<", ">10<", ">100<", ">1000<"] {
            assert!(svg.contains(tick), "no tick {tick}");
        }
        let linear = line_chart("latency", "seconds", "ms", &series);
        assert!(!linear.contains("log scale"));
        // Nothing positive: no data, not a failure.
        let zeros = vec![("p99".to_owned(), vec![(0.0, 0.0)])];
        assert!(log_chart("latency", "seconds", "ms", &zeros).contains("no data"));
    }

    #[test]
    fn statuses_fall_into_their_groups() {
        assert_eq!(status_group("200"), "2xx");
        assert_eq!(status_group("304"), "304");
        assert_eq!(status_group("404"), "other 4xx");
        assert_eq!(status_group("503"), "5xx");
        assert_eq!(status_group("failed"), "failed");
    }
}
