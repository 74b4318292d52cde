"""Shared building blocks of the vigil dashboards: the template variables,
panel helpers with units and stable ids, and the PromQL idioms the metric
catalogue (docs/metrics.md) calls for."""

from __future__ import annotations

import json
from typing import Iterable

from grafana_foundation_sdk.builders import (
    common as cb,
    dashboard as db,
    heatmap,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hmm
from grafana_foundation_sdk.models import prometheus as pm

# Every panel and variable queries the data source the operator picks.
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")

# The `up` series of the agents: the scrape job must be named `vigil`
# (dashboards/provisioning/prometheus/prometheus.yml does).
JOB = 'job="vigil"'


def by_node(expr: str) -> str:
    """Gives a per-agent series (process, store: no `node` label) the
    agent's node name, joined from `vigil_build_info`, filtered by $node."""
    return (
        f"{expr} * on(job, instance) group_left(node) "
        'vigil_build_info{node=~"$node"}'
    )


def quantile(q: float, bucket: str, by: str) -> str:
    """A latency percentile from a Prometheus histogram (never averages)."""
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({bucket}[$__rate_interval])))"


def datasource_var() -> db.DatasourceVariable:
    return db.DatasourceVariable("datasource").label("Data source").type("prometheus")


def node_var() -> db.QueryVariable:
    return (
        db.QueryVariable("node")
        .label("Node")
        .datasource(DS)
        .query("label_values(vigil_build_info, node)")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(text="All", value="$__all", selected=True))
    )


def volume_var() -> db.QueryVariable:
    return (
        db.QueryVariable("volume")
        .label("Volume")
        .datasource(DS)
        .query("label_values(vigil_volume_state, volume)")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(text="All", value="$__all", selected=True))
    )


class Query:
    """One PromQL target: expression, legend, instant or range, format."""

    def __init__(self, expr: str, legend: str = "", instant: bool = False, fmt: str = "") -> None:
        self.expr = expr
        self.legend = legend
        self.instant = instant
        self.fmt = fmt

    def build(self, ref: str) -> prometheus.Dataquery:
        q = prometheus.Dataquery().expr(self.expr).ref_id(ref).datasource(DS)
        if self.legend:
            q = q.legend_format(self.legend)
        q = q.instant() if self.instant else q.range()
        if self.fmt == "table":
            q = q.format(pm.PromQueryFormat.TABLE)
        elif self.fmt == "heatmap":
            q = q.format(pm.PromQueryFormat.HEATMAP)
        return q


def _targets(panel, queries: Iterable[Query]):
    for i, q in enumerate(queries):
        panel = panel.with_target(q.build(chr(ord("A") + i)))
    return panel


class Board:
    """A dashboard under construction: assigns panel ids in order, so ids
    (and the JSON) are stable from one generation to the next."""

    def __init__(self, uid: str, title: str, description: str, variables: list) -> None:
        self.next_id = 1
        self.d = (
            db.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(["vigil"])
            .editable()
            .refresh("30s")
            .time("now-1h", "now")
            .timezone("browser")
            .tooltip(dm.DashboardCursorSync.CROSSHAIR)
            .link(
                db.DashboardLink("vigil dashboards")
                .type(dm.DashboardLinkType.DASHBOARDS)
                .tags(["vigil"])
                .as_dropdown(True)
                .include_vars(True)
                .keep_time(True)
            )
        )
        for v in variables:
            self.d = self.d.with_variable(v)

    def _id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i

    def row(self, title: str) -> None:
        self.d = self.d.with_row(db.Row(title).id(self._id()))

    def add(self, panel) -> None:
        self.d = self.d.with_panel(panel.id(self._id()).datasource(DS))

    def annotation(self, name: str, expr: str, color: str) -> None:
        a = db.AnnotationQuery().name(name).datasource(DS).enable(True).icon_color(color).expr(expr)
        self.d = self.d.annotation(a)

    def json(self) -> str:
        return json.dumps(self.d.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def ts(title: str, unit: str, queries: list[Query], desc: str = "", w: int = 12, h: int = 8,
       no_value: str = "", stack: bool = False) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .title(title)
        .unit(unit)
        .span(w)
        .height(h)
        .line_width(1)
        .fill_opacity(10)
        .legend(cb.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.LIST).placement(cm.LegendPlacement.BOTTOM))
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    if stack:
        p = p.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    if desc:
        p = p.description(desc)
    if no_value:
        p = p.no_value(no_value)
    return _targets(p, queries)


def st(title: str, unit: str, queries: list[Query], desc: str = "", w: int = 4, h: int = 4,
       no_value: str = "", text_mode: cm.BigValueTextMode = cm.BigValueTextMode.AUTO,
       mappings: list | None = None, thresholds: list | None = None) -> stat.Panel:
    p = (
        stat.Panel()
        .title(title)
        .unit(unit)
        .span(w)
        .height(h)
        .text_mode(text_mode)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .color_mode(cm.BigValueColorMode.VALUE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if desc:
        p = p.description(desc)
    if no_value:
        p = p.no_value(no_value)
    if mappings:
        p = p.mappings(mappings)
    if thresholds:
        p = p.thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(thresholds))
    return _targets(p, queries)


def tbl(title: str, unit: str, queries: list[Query], desc: str = "", w: int = 12, h: int = 8,
        no_value: str = "") -> table.Panel:
    """A table of instant results, one row per series (labels as columns)."""
    p = (
        table.Panel()
        .title(title)
        .unit(unit)
        .span(w)
        .height(h)
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": {"Time": True}, "renameByName": {"Value": "value"}},
            )
        )
    )
    if desc:
        p = p.description(desc)
    if no_value:
        p = p.no_value(no_value)
    return _targets(p, queries)


def timeline(title: str, queries: list[Query], mappings: list, desc: str = "", w: int = 12,
             h: int = 6, no_value: str = "") -> statetimeline.Panel:
    p = (
        statetimeline.Panel()
        .title(title)
        .unit("none")
        .span(w)
        .height(h)
        .mappings(mappings)
        .show_value(cm.VisibilityMode.NEVER)
    )
    if desc:
        p = p.description(desc)
    if no_value:
        p = p.no_value(no_value)
    return _targets(p, queries)


def hm(title: str, unit: str, bucket_rate_by_le: str, desc: str = "", w: int = 12, h: int = 8,
       no_value: str = "") -> heatmap.Panel:
    """A latency heatmap from a histogram's buckets (`sum by (le) (rate(...))`)."""
    p = (
        heatmap.Panel()
        .title(title)
        .unit(unit)
        .span(w)
        .height(h)
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit(unit))
        .color(heatmap.HeatmapColorOptions().mode(hmm.HeatmapColorMode.SCHEME).scheme("Oranges").steps(64))
        .cell_gap(1)
        .max_data_points(60)
    )
    if desc:
        p = p.description(desc)
    if no_value:
        p = p.no_value(no_value)
    return _targets(p, [Query(bucket_rate_by_le, legend="{{le}}", fmt="heatmap")])


def value_map(pairs: dict[str, tuple[str, str]]) -> list:
    """Value mappings: value -> (text, color)."""
    return [
        dm.ValueMap(
            options={k: dm.ValueMappingResult(text=t, color=c, index=i) for i, (k, (t, c)) in enumerate(pairs.items())}
        )
    ]


def step(value: float | None, color: str) -> dm.Threshold:
    return dm.Threshold(value=value, color=color)
