//! A recorder made for one scrape: the collector sets the current value of
//! every scraped series into it, then it is rendered and dropped.

use metrics::{Key, Label, Level, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use super::catalogue::{FAMILIES, Kind, Source, labels_match};

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

pub struct Scrape {
    rec: PrometheusRecorder,
}

/// Labels as `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

fn key(name: &'static str, labels: Labels) -> Key {
    Key::from_parts(
        name,
        labels
            .into_iter()
            .map(|(k, v)| Label::new(k, v))
            .collect::<Vec<_>>(),
    )
}

impl Scrape {
    pub fn new() -> Scrape {
        Scrape {
            rec: PrometheusBuilder::new().build_recorder(),
        }
    }

    /// Sets a gauge series.
    pub fn gauge(&self, name: &'static str, labels: Labels, value: f64) {
        debug_assert!(
            labels_match(name, &labels),
            "{name} {labels:?} vs catalogue"
        );
        self.rec
            .register_gauge(&key(name, labels), &META)
            .set(value);
    }

    /// Sets a counter series to a total kept elsewhere.
    pub fn counter(&self, name: &'static str, labels: Labels, total: u64) {
        debug_assert!(
            labels_match(name, &labels),
            "{name} {labels:?} vs catalogue"
        );
        self.rec
            .register_counter(&key(name, labels), &META)
            .absolute(total);
    }

    /// The exposition text, with HELP for every scraped family.
    pub fn render(self) -> String {
        for fam in FAMILIES.iter().filter(|f| f.source == Source::Scraped) {
            let help = SharedString::const_str(fam.help);
            match fam.kind {
                Kind::Counter => self.rec.describe_counter(fam.name.into(), None, help),
                Kind::Gauge => self.rec.describe_gauge(fam.name.into(), None, help),
                Kind::Histogram => self.rec.describe_histogram(fam.name.into(), None, help),
            }
        }
        self.rec.handle().render()
    }
}
