"""Render a ``visualization_msgs/MarkerArray`` to a PNG with matplotlib: a picture of what RViz
would show, for docs and tests on machines without a display or RViz.

The markers are drawn in their own frame, taken to be a camera optical frame (x right, y down,
z forward; REP 103), seen from an RViz-like orbit viewpoint: behind, above and to the side of
the camera, with the image's "up" (-y) pointing up on the page. Axes are in metres and labelled
with the optical frame's axes; the camera is a small RGB triad (x red, y green, z blue, as
RViz's axes display) at the origin.

Drawn: SPHERE, SPHERE_LIST, POINTS, LINE_LIST, LINE_STRIP, TEXT_VIEW_FACING (each marker's
``pose`` applied, per-point ``colors`` honoured). DELETE and DELETEALL markers are skipped, as
are other types (counted in the returned summary). There is no TF here: every drawn marker must
share one ``header.frame_id``.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from visualization_msgs.msg import Marker

_POINT_TYPES = {Marker.SPHERE_LIST: 'o', Marker.POINTS: 's'}
_LINE_TYPES = (Marker.LINE_LIST, Marker.LINE_STRIP)
_DRAWN_TYPES = (Marker.SPHERE, Marker.TEXT_VIEW_FACING, *_POINT_TYPES, *_LINE_TYPES)
_TYPE_NAMES = {getattr(Marker, name): name for name in (
    'ARROW', 'CUBE', 'SPHERE', 'CYLINDER', 'LINE_STRIP', 'LINE_LIST', 'CUBE_LIST', 'SPHERE_LIST',
    'POINTS', 'TEXT_VIEW_FACING', 'MESH_RESOURCE', 'TRIANGLE_LIST', 'ARROW_STRIP')
    if hasattr(Marker, name)}  # ARROW_STRIP is newer than Humble
_AXIS_COLOURS = ('#e41a1c', '#4daf4a', '#377eb8')  # x red, y green, z blue


@dataclasses.dataclass
class RenderSummary:
    frame_id: str
    drawn: dict[str, int]  # marker type name -> markers drawn
    skipped: dict[str, int]  # 'DELETE', 'DELETEALL', 'empty' or an unsupported type name
    extent_m: tuple[tuple[float, float], ...]  # (min, max) of x, y, z of the drawn points


def _rotate(quaternion: Any, points: np.ndarray) -> np.ndarray:
    x, y, z, w = (float(quaternion.x), float(quaternion.y), float(quaternion.z),
                  float(quaternion.w))
    norm = np.sqrt(x * x + y * y + z * z + w * w)
    if norm == 0:  # RViz treats an all-zero quaternion as identity (with a warning)
        return points
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    rotation = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    return points @ rotation.T


def _marker_points(marker: Any) -> np.ndarray:
    """(N, 3) points of a marker in its header frame (pose applied)."""
    if marker.type in (Marker.SPHERE, Marker.TEXT_VIEW_FACING):
        local = np.zeros((1, 3))
    else:
        local = np.array([[p.x, p.y, p.z] for p in marker.points], np.float64).reshape(-1, 3)
    position = marker.pose.position
    return _rotate(marker.pose.orientation, local) + [position.x, position.y, position.z]


def _marker_colours(marker: Any, count: int) -> np.ndarray:
    if len(marker.colors) == count and count:
        return np.array([[c.r, c.g, c.b, c.a] for c in marker.colors], np.float64).clip(0, 1)
    c = marker.color
    return np.tile(np.clip([c.r, c.g, c.b, c.a], 0, 1), (count, 1))


def _plot(points: np.ndarray) -> np.ndarray:
    """Optical frame (x right, y down, z forward) -> plot axes (x, z, -y): up is up."""
    return np.stack([points[:, 0], points[:, 2], -points[:, 1]], axis=1)


def draw_marker_array(ax: Any, markers: Any, *, elevation_deg: float = 20.0,
                      azimuth_deg: float = -58.0, triad_length_m: float | None = None,
                      margin_m: float = 0.15, zoom: float = 0.85) -> RenderSummary:
    """Draw a MarkerArray on a matplotlib 3D axes (``projection='3d'``).

    Raises:
        ValueError: nothing drawable (empty array, only deletions or empty point lists), or
            markers in more than one frame.
    """
    drawable, skipped = [], Counter()
    for marker in markers.markers:
        if marker.action == Marker.DELETEALL:
            skipped['DELETEALL'] += 1
        elif marker.action == Marker.DELETE:
            skipped['DELETE'] += 1
        elif marker.type not in _DRAWN_TYPES:
            skipped[_TYPE_NAMES.get(marker.type, f'type {marker.type}')] += 1
        elif marker.type not in (Marker.SPHERE, Marker.TEXT_VIEW_FACING) and not marker.points:
            skipped['empty'] += 1
        else:
            drawable.append(marker)
    if not drawable:
        raise ValueError(f'MarkerArray has nothing to draw ({len(markers.markers)} markers; '
                         f'skipped: {dict(skipped) or "none"})')
    frames = sorted({m.header.frame_id for m in drawable})
    if len(frames) > 1:
        raise ValueError(f'markers are in several frames {frames}; without TF they cannot be '
                         'drawn together')

    all_points = np.concatenate([_marker_points(m) for m in drawable])
    low, high = all_points.min(axis=0), all_points.max(axis=0)
    low, high = np.minimum(low, 0.0) - margin_m, np.maximum(high, 0.0) + margin_m  # + camera
    span_m = float(np.max(high - low))
    # matplotlib sizes are in points: scale metres by the axes' width in points over the span
    figure_width_pt = ax.figure.get_figwidth() * 72 * ax.get_position().width
    points_per_m = figure_width_pt / span_m

    drawn = Counter()
    for marker in drawable:
        xyz = _plot(_marker_points(marker))
        colours = _marker_colours(marker, len(xyz))
        name = _TYPE_NAMES[marker.type]
        if marker.type in _POINT_TYPES or marker.type == Marker.SPHERE:
            size_pt = max(float(marker.scale.x) * points_per_m, 2.0)
            ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], s=size_pt ** 2, c=colours,
                       marker=_POINT_TYPES.get(marker.type, 'o'), depthshade=False,
                       edgecolors='none')
        elif marker.type in _LINE_TYPES:
            from mpl_toolkits.mplot3d.art3d import Line3DCollection

            if marker.type == Marker.LINE_LIST:
                even = len(xyz) // 2 * 2
                segments = xyz[:even].reshape(-1, 2, 3)
                seg_colours = colours[:even:2]
            else:
                segments = np.stack([xyz[:-1], xyz[1:]], axis=1)
                seg_colours = colours[:-1]
            width_pt = max(float(marker.scale.x) * points_per_m, 1.0)
            ax.add_collection3d(Line3DCollection(segments, colors=seg_colours,
                                                 linewidths=width_pt))
        else:  # TEXT_VIEW_FACING: scale.z is the text height
            height_pt = max(float(marker.scale.z) * points_per_m, 6.0)
            ax.text(*xyz[0], marker.text, color=colours[0], fontsize=height_pt,
                    ha='center', va='bottom')
        drawn[name] += 1

    length = triad_length_m or max(0.1, round(0.1 * span_m, 2))
    for axis, colour in enumerate(_AXIS_COLOURS):
        tip = np.zeros((1, 3))
        tip[0, axis] = length
        ends = _plot(np.concatenate([np.zeros((1, 3)), tip]))
        ax.plot(ends[:, 0], ends[:, 1], ends[:, 2], color=colour, linewidth=2.5)
    ax.text(0, 0, -1.4 * length, frames[0] or '(no frame_id)', fontsize=7, color='0.3',
            ha='center', va='top')

    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[2], high[2])
    ax.set_zlim(-high[1], -low[1])
    ax.set_box_aspect((high[0] - low[0], high[2] - low[2], high[1] - low[1]), zoom=zoom)
    ax.set_xlabel('x [m] (right)')
    ax.set_ylabel('z [m] (forward)')
    ax.set_zlabel('y [m] (down)')
    # the vertical plot axis is -y: label its ticks with y itself
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(MaxNLocator(5))
    ax.zaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f'{-value + 0.0:g}'))
    ax.view_init(elev=elevation_deg, azim=azimuth_deg)
    return RenderSummary(frame_id=frames[0], drawn=dict(drawn), skipped=dict(skipped),
                         extent_m=tuple(zip(all_points.min(axis=0).tolist(),
                                            all_points.max(axis=0).tolist())))


def render_marker_array(markers: Any, out_png: str | Path, *, title: str | None = None,
                        size_in: tuple[float, float] = (6.0, 5.5), dpi: int = 100,
                        **view: Any) -> RenderSummary:
    """Draw a MarkerArray (see :func:`draw_marker_array`) into a new figure saved as a PNG.

    Raises:
        ValueError: nothing drawable, or several frames (no file is written then).
    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size_in, dpi=dpi)
    try:
        ax = fig.add_subplot(projection='3d')
        summary = draw_marker_array(ax, markers, **view)
        if title:
            ax.set_title(title, fontsize=10)
        out = Path(out_png)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi)
    finally:
        plt.close(fig)
    return summary
