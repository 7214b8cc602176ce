"""Procedural outdoor street scenes in Cityscapes form: an RGB image, Cityscapes label ids (0..33)
and raw 16-bit disparity values, rendered from one 3D layout so that labels and disparity agree.

World coordinates in metres: X to the right, Y up from the ground, Z forward from the camera. The
camera looks horizontally; a flat ground plane then has disparity growing linearly from the horizon
row towards the camera, vertical facades along the street have disparity linear in the image
column, and upright objects (people, cars, poles, trees) are drawn at the depth of their base.
Disparity is that of the real Cityscapes rig (focal length 2262 px on 2048-wide images, baseline
0.22 m), whatever the generated image size, as in the real data after resizing.
"""

from dataclasses import dataclass

import numpy as np

from data.cityscapes import cityscapes_label_id
from data.synthetic.drawing import (Canvas, finish_image, jitter_colour, pixel_centres, pixel_region, smooth_noise,
                                    whole_image)

CITYSCAPES_FOCAL_PIXELS = 2262.0
CITYSCAPES_BASELINE_METRES = 0.22
CITYSCAPES_FULL_WIDTH = 2048
RAW_DISPARITY_MAX = 65535
NEAREST_DEPTH = 1.0
TEXTURE_SIZE = 64

ROAD = cityscapes_label_id("road")
SIDEWALK = cityscapes_label_id("sidewalk")
TERRAIN = cityscapes_label_id("terrain")
BUILDING = cityscapes_label_id("building")
WALL = cityscapes_label_id("wall")
FENCE = cityscapes_label_id("fence")
VEGETATION = cityscapes_label_id("vegetation")
SKY = cityscapes_label_id("sky")
POLE = cityscapes_label_id("pole")
TRAFFIC_SIGN = cityscapes_label_id("traffic sign")
TRAFFIC_LIGHT = cityscapes_label_id("traffic light")
PERSON = cityscapes_label_id("person")
CAR = cityscapes_label_id("car")
TRUCK = cityscapes_label_id("truck")
BUS = cityscapes_label_id("bus")
EGO_VEHICLE = cityscapes_label_id("ego vehicle")

FACADE_COLOURS = ((0.72, 0.66, 0.55), (0.55, 0.33, 0.27), (0.5, 0.5, 0.5), (0.8, 0.78, 0.74), (0.45, 0.38, 0.3),
                  (0.62, 0.58, 0.45), (0.35, 0.36, 0.4))
SIDEWALK_COLOURS = ((0.6, 0.58, 0.56), (0.58, 0.47, 0.45), (0.5, 0.5, 0.52))
CAR_COLOURS = ((0.9, 0.9, 0.9), (0.08, 0.08, 0.09), (0.5, 0.51, 0.53), (0.7, 0.71, 0.72), (0.6, 0.1, 0.1),
               (0.1, 0.2, 0.5), (0.2, 0.35, 0.25), (0.8, 0.6, 0.2))
SIGN_COLOURS = ((0.8, 0.1, 0.1), (0.1, 0.3, 0.75), (0.95, 0.85, 0.1), (0.92, 0.92, 0.92))
LAMP_COLOURS = ((1.0, 0.15, 0.1), (1.0, 0.75, 0.1), (0.2, 1.0, 0.4))
SKIN_COLOURS = ((0.93, 0.76, 0.64), (0.78, 0.57, 0.44), (0.5, 0.34, 0.24), (0.35, 0.24, 0.17))


@dataclass(frozen=True)
class StreetCamera:
    """A pinhole camera `height_m` above the ground looking along +Z: focal length and the column
    of the optical centre in pixels of the generated image, the horizon at `horizon_row`."""

    focal: float
    centre_column: float
    horizon_row: float
    height_m: float

    def column(self, x, z):
        """Image column of the world point (x, ., z)."""
        return self.centre_column + self.focal * x / z

    def row(self, y, z):
        """Image row of the world point (., y, z)."""
        return self.horizon_row + self.focal * (self.height_m - y) / z


@dataclass(frozen=True)
class Street:
    """Lateral layout of the street (X positions in metres, left side negative) and the distance
    where a row of buildings closes it (inf when it runs to the horizon)."""

    road_left: float
    road_right: float
    sidewalk_left: float
    sidewalk_right: float
    facade_left: float
    facade_right: float
    end: float


@dataclass(frozen=True)
class Panel:
    """A vertical rectangle of facade, wall, fence or hedge: on the plane X = `plane` from Z `start`
    to `stop` (along the street), or on the plane Z = `plane` from X `start` to `stop` (`across`)."""

    across: bool
    kind: int
    plane: float
    start: float
    stop: float
    height: float
    colour: np.ndarray
    window_spacing: tuple
    brightness: float


def disparity_pixels(depth: np.ndarray) -> np.ndarray:
    """Disparity in pixels of the 2048-wide Cityscapes images of points at `depth` metres."""
    return CITYSCAPES_FOCAL_PIXELS * CITYSCAPES_BASELINE_METRES / depth


def raw_disparity(depth: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """Raw 16-bit disparity values uint16 [H, W] as stored in Cityscapes PNGs: p = 256 d + 1 for a
    disparity of d pixels, 0 where `invalid` or the depth is infinite."""
    finite = np.isfinite(depth) & ~invalid
    values = np.zeros(depth.shape, dtype=np.float64)
    values[finite] = np.round(disparity_pixels(depth[finite].astype(np.float64)) * 256 + 1)
    return np.clip(values, 0, RAW_DISPARITY_MAX).astype(np.uint16)


def texture_lookup(table: np.ndarray, first: np.ndarray, second: np.ndarray, cell: float) -> np.ndarray:
    """Values of the tiled texture `table` [N, N] at world coordinates (first, second) in metres,
    one texel per `cell` metres (nearest texel)."""
    size = table.shape[0]
    first_index = np.floor(first / cell).astype(np.int64) % size
    second_index = np.floor(second / cell).astype(np.int64) % size
    return table[second_index, first_index]


def random_texture(rng: np.random.Generator) -> np.ndarray:
    """A tileable-enough random texture float32 [TEXTURE_SIZE, TEXTURE_SIZE] in about [-1, 1]."""
    return smooth_noise(rng, TEXTURE_SIZE, TEXTURE_SIZE, 4.0, octaves=3)


def plan_street(rng: np.random.Generator) -> Street:
    """Random widths of road, sidewalks and grass strips, and where the street ends."""
    road_left = -rng.uniform(3.0, 9.0)
    road_right = rng.uniform(1.8, 4.5)
    sidewalk_left = road_left - rng.uniform(1.8, 4.5)
    sidewalk_right = road_right + rng.uniform(1.8, 4.5)
    facade_left = sidewalk_left - (rng.uniform(1.0, 5.0) if rng.random() < 0.35 else 0.0)
    facade_right = sidewalk_right + (rng.uniform(1.0, 5.0) if rng.random() < 0.35 else 0.0)
    end = rng.uniform(45.0, 160.0) if rng.random() < 0.6 else np.inf
    return Street(road_left, road_right, sidewalk_left, sidewalk_right, facade_left, facade_right, end)


def sky_colour(rng: np.random.Generator, camera: StreetCamera, height: int, width: int) -> np.ndarray:
    """Sky float32 [H, W, 3]: a vertical gradient from a zenith colour to a paler horizon, with clouds."""
    overcast = rng.random() < 0.4
    zenith = jitter_colour(rng, (0.62, 0.66, 0.7) if overcast else (0.35, 0.55, 0.85), 0.06)
    horizon = jitter_colour(rng, (0.8, 0.82, 0.84) if overcast else (0.75, 0.83, 0.92), 0.04)
    rows, _ = pixel_centres(whole_image(height, width))
    blend = np.clip(rows / max(camera.horizon_row, 1.0), 0, 1)[:, :, None]
    gradient = zenith * (1 - blend) + horizon * blend
    clouds = np.clip(smooth_noise(rng, height, width, max(width / 6, 2.0)) * 1.5 + rng.uniform(-0.6, 0.4), 0, 1)
    cloud_colour = np.float32(rng.uniform(0.8, 0.97))
    return (gradient * (1 - clouds[:, :, None] * 0.8) + cloud_colour * clouds[:, :, None] * 0.8).astype(np.float32)


def draw_ground(canvas: Canvas, rng: np.random.Generator, camera: StreetCamera, street: Street) -> None:
    """Road with dashed lane markings, tiled sidewalks with kerbs, and grass beyond them."""
    region = pixel_region(camera.horizon_row + 0.5, canvas.height, 0, canvas.width, canvas.height, canvas.width)
    if region is None:
        return
    rows, columns = pixel_centres(region)
    depth = camera.focal * camera.height_m / (rows - camera.horizon_row) * np.ones_like(columns)
    x = (columns - camera.centre_column) * depth / camera.focal
    road = (x > street.road_left) & (x < street.road_right)
    sidewalk = ~road & (x > street.sidewalk_left) & (x < street.sidewalk_right)
    label = np.where(road, ROAD, np.where(sidewalk, SIDEWALK, TERRAIN))

    asphalt = jitter_colour(rng, (0.36, 0.36, 0.38), 0.06)
    road_colour = asphalt * (1 + 0.12 * texture_lookup(random_texture(rng), x, depth, 0.4))[:, :, None]
    lane_lines = np.arange(street.road_right - 3.3, street.road_left + 1.0, -3.3)
    near_line = np.min(np.abs(x[:, :, None] - lane_lines), axis=2) < 0.09 if lane_lines.size else np.zeros_like(road)
    dashed = near_line & ((depth % 9.0) < 3.5)
    edge_lines = (np.abs(x - street.road_left) < 0.15) | (np.abs(x - street.road_right) < 0.15)
    road_colour[(dashed | edge_lines) & road] = jitter_colour(rng, (0.85, 0.85, 0.82), 0.05)

    paving = jitter_colour(rng, SIDEWALK_COLOURS[rng.integers(len(SIDEWALK_COLOURS))], 0.05)
    tile = rng.uniform(0.3, 0.6)
    joints = ((x % tile) < 0.04) | ((depth % tile) < 0.04)
    sidewalk_colour = paving * (1 + 0.08 * texture_lookup(random_texture(rng), x, depth, 0.25))[:, :, None]
    sidewalk_colour = sidewalk_colour * np.where(joints, 0.82, 1.0)[:, :, None]
    kerb = (np.abs(x - street.road_left) < 0.35) | (np.abs(x - street.road_right) < 0.35)
    sidewalk_colour[kerb] *= 1.15

    grass = jitter_colour(rng, (0.36, 0.45, 0.2), 0.06)
    grass_colour = grass * (1 + 0.25 * texture_lookup(random_texture(rng), x, depth, 0.15))[:, :, None]

    colour = np.where(road[:, :, None], road_colour, np.where(sidewalk[:, :, None], sidewalk_colour, grass_colour))
    canvas.paint(region, np.ones(label.shape, dtype=bool), depth, label, colour)


def plan_panels(rng: np.random.Generator, street: Street) -> list:
    """Facade panels: blocks of buildings along both sides (with hedges, walls and fences in the
    gaps, a building set back behind each gap) and, if the street ends, a row of buildings across it."""
    panels = []
    for plane in (street.facade_left, street.facade_right):
        side = np.sign(plane)
        position = rng.uniform(-2.0, 4.0)
        stop = min(street.end, rng.uniform(90.0, 220.0))
        while position < stop:
            length = rng.uniform(8.0, 30.0)
            kind = rng.choice((BUILDING, VEGETATION, WALL, FENCE), p=(0.72, 0.14, 0.07, 0.07))
            if kind != BUILDING:
                setback = plane + side * rng.uniform(4.0, 12.0)
                panels.append(random_panel(rng, False, BUILDING, setback, position, position + length))
            panels.append(random_panel(rng, False, kind, plane, position, position + length))
            position += length
    if np.isfinite(street.end):
        position = street.facade_left - 40.0
        while position < street.facade_right + 40.0:
            length = rng.uniform(8.0, 25.0)
            panels.append(random_panel(rng, True, BUILDING, street.end, position, position + length))
            position += length
    return panels


def random_panel(rng: np.random.Generator, across: bool, kind: int, plane: float, start: float, stop: float) -> Panel:
    """One panel of `kind` with random height, colour, window grid and brightness."""
    if kind == BUILDING:
        height = rng.uniform(7.0, 28.0)
        colour = jitter_colour(rng, FACADE_COLOURS[rng.integers(len(FACADE_COLOURS))], 0.07)
    elif kind == VEGETATION:
        height = rng.uniform(1.5, 6.0)
        colour = jitter_colour(rng, (0.25, 0.38, 0.14), 0.06)
    elif kind == WALL:
        height = rng.uniform(1.0, 2.8)
        colour = jitter_colour(rng, (0.62, 0.6, 0.56), 0.08)
    else:
        height = rng.uniform(1.0, 2.0)
        colour = jitter_colour(rng, (0.45, 0.38, 0.3), 0.1)
    window_spacing = (rng.uniform(2.2, 4.0), rng.uniform(2.8, 3.6))
    return Panel(across, int(kind), float(plane), float(start), float(stop), float(height), colour, window_spacing,
                 float(rng.uniform(0.75, 1.1)))


def panel_appearance(rng: np.random.Generator, panel: Panel, along: np.ndarray, up: np.ndarray,
                     reflection: np.ndarray) -> tuple:
    """Mask and colour [h, w, 3] of a panel at facade coordinates `along` (metres from its start,
    horizontally) and `up` (metres above ground); `reflection` is the sky colour seen in windows."""
    shape = np.broadcast_shapes(along.shape, up.shape)
    along, up = np.broadcast_to(along, shape), np.broadcast_to(up, shape)
    grain = texture_lookup(random_texture(rng), along, up, 0.3 if panel.kind == VEGETATION else 0.5)
    colour = panel.colour * panel.brightness * (1 + 0.07 * grain)[:, :, None]
    top = np.full(shape, panel.height, dtype=np.float32)
    if panel.kind == BUILDING:
        spacing_along, spacing_up = panel.window_spacing
        column_phase, floor_phase = (along % spacing_along) / spacing_along, (up % spacing_up) / spacing_up
        upper_window = (column_phase > 0.25) & (column_phase < 0.75) & (floor_phase > 0.35) & (floor_phase < 0.8)
        upper_window &= (up > spacing_up) & (up < panel.height - 1.0)
        shop_window = (up > 0.4) & (up < 2.6) & ((along % (2 * spacing_along)) / (2 * spacing_along) < 0.75)
        windows = (upper_window | shop_window) & (along > 0.5) & (along < panel.stop - panel.start - 0.5)
        glass = np.float32(rng.uniform(0.1, 0.25)) + 0.35 * reflection
        colour = np.where(windows[:, :, None], glass, colour)
        cornice = up > panel.height - 0.5
        colour[cornice] *= 0.8
    elif panel.kind == VEGETATION:
        top = panel.height + 0.8 * texture_lookup(random_texture(rng), along, np.zeros_like(along), 0.7)
        colour = colour * (1 + 0.3 * grain)[:, :, None]
    elif panel.kind == FENCE:
        colour = colour * np.where((along % 0.16) < 0.1, 1.0, 0.55)[:, :, None]
    else:
        colour = colour * np.where((along % 2.5) < 0.05, 0.7, 1.0)[:, :, None]
    mask = (up >= 0) & (up <= top) & (along >= 0) & (along <= panel.stop - panel.start)
    return mask, colour


def draw_side_panel(canvas: Canvas, rng: np.random.Generator, camera: StreetCamera, panel: Panel,
                    reflection: np.ndarray) -> None:
    """A panel on a plane X = const along the street: depth is constant along image columns."""
    start = max(panel.start, NEAREST_DEPTH)
    if panel.stop <= start:
        return
    near_columns = camera.column(panel.plane, start)
    far_columns = camera.column(panel.plane, panel.stop)
    region = pixel_region(camera.row(panel.height + 1.0, start), camera.row(0.0, start),
                          min(near_columns, far_columns), max(near_columns, far_columns), canvas.height, canvas.width)
    if region is None:
        return
    rows, columns = pixel_centres(region)
    offset = columns - camera.centre_column
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(offset * panel.plane > 0, camera.focal * panel.plane / offset, np.inf)
    up = camera.height_m - (rows - camera.horizon_row) * depth / camera.focal
    mask, colour = panel_appearance(rng, panel, depth - panel.start, up, reflection[region])
    canvas.paint(region, mask & (depth >= start) & np.isfinite(depth), depth, panel.kind, colour)


def upright_region(canvas: Canvas, camera: StreetCamera, left: float, right: float, bottom: float, top: float,
                   depth: float):
    """Region and metric coordinates of an upright rectangle facing the camera at `depth`: returns
    (region, x [1, w], y [h, 1]) with world X and height Y of the pixel centres, or None if unseen."""
    if depth < NEAREST_DEPTH:
        return None
    region = pixel_region(camera.row(top, depth), camera.row(bottom, depth), camera.column(left, depth),
                          camera.column(right, depth), canvas.height, canvas.width)
    if region is None:
        return None
    rows, columns = pixel_centres(region)
    x = (columns - camera.centre_column) * depth / camera.focal
    y = camera.height_m - (rows - camera.horizon_row) * depth / camera.focal
    return region, x, y


def draw_cross_panel(canvas: Canvas, rng: np.random.Generator, camera: StreetCamera, panel: Panel,
                     reflection: np.ndarray) -> None:
    """A panel across the street on the plane Z = const (constant depth)."""
    placed = upright_region(canvas, camera, panel.start, panel.stop, 0.0, panel.height + 1.0, panel.plane)
    if placed is None:
        return
    region, x, y = placed
    mask, colour = panel_appearance(rng, panel, x - panel.start, y, reflection[region])
    canvas.paint(region, mask, panel.plane, panel.kind, colour)


def draw_person(canvas: Canvas, rng: np.random.Generator, camera: StreetCamera, centre: float, depth: float) -> None:
    """A standing pedestrian (head, torso, arms, legs) at depth `depth` with random clothes."""
    height = rng.uniform(1.5, 1.95)
    placed = upright_region(canvas, camera, centre - 0.35, centre + 0.35, 0.0, height, depth)
    if placed is None:
        return
    region, x, y = placed
    x = x - centre
    head = (x / 0.11) ** 2 + ((y - (height - 0.12)) / 0.13) ** 2 < 1
    torso = (np.abs(x) < 0.2 - 0.04 * (y < 0.7 * height)) & (y > 0.48 * height) & (y < height - 0.23)
    arms = (np.abs(x) >= 0.2) & (np.abs(x) < 0.27) & (y > 0.45 * height) & (y < height - 0.26)
    stride = rng.uniform(-0.08, 0.08)
    legs = (np.abs(np.abs(x) - 0.095 - stride * (0.5 * height - y)) < 0.07) & (y >= 0) & (y <= 0.5 * height)
    skin = jitter_colour(rng, SKIN_COLOURS[rng.integers(len(SKIN_COLOURS))], 0.04)
    shirt = rng.uniform(0.05, 0.9, size=3).astype(np.float32)
    trousers = rng.uniform(0.05, 0.45, size=3).astype(np.float32)
    colour = np.where(head[:, :, None], skin, np.where(legs[:, :, None], trousers, shirt))
    colour = colour * (0.85 + 0.15 * np.cos(np.clip(x / 0.27, -1, 1) * np.pi / 2))[:, :, None]
    canvas.paint(region, head | torso | arms | legs, depth, PERSON, colour)


def draw_vehicle(canvas: Canvas, rng: np.random.Generator, camera: StreetCamera, centre: float, depth: float,
                 reflection: np.ndarray) -> None:
    """A car, or sometimes a truck or bus, seen from behind, standing on the ground at `depth`."""
    kind = rng.choice((CAR, TRUCK, BUS), p=(0.84, 0.08, 0.08))
    width, height = (rng.uniform(1.7, 1.95), rng.uniform(1.4, 1.65)) if kind == CAR else (2.5, rng.uniform(3.0, 3.6))
    half = width / 2
    placed = upright_region(canvas, camera, centre - half, centre + half, 0.0, height, depth)
    if placed is None:
        return
    region, x, y = placed
    x = x - centre
    wheels = (np.abs(x) > half - 0.5) & (np.abs(x) < half - 0.05) & (y < 0.34)
    paint = jitter_colour(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 0.05)
    if kind == CAR:
        body = (np.abs(x) < half) & (y >= 0.28) & (y < 0.95)
        cabin_half = half * 0.86 - (y - 0.95) * 0.45
        cabin = (np.abs(x) < cabin_half) & (y >= 0.95) & (y <= height)
        glass = (np.abs(x) < cabin_half - 0.1) & (y > 1.0) & (y < height - 0.07)
    else:
        body = (np.abs(x) < half) & (y >= 0.35) & (y <= height)
        cabin = np.zeros_like(body)
        glass = (np.abs(x) < half - 0.15) & (y > height * 0.55) & (y < height - 0.25)
    lights = (np.abs(x) > half - 0.3) & (np.abs(x) < half - 0.05) & (y > 0.7) & (y < 0.86)
    plate = (np.abs(x) < 0.26) & (y > 0.4) & (y < 0.52)
    shading = (0.7 + 0.3 * np.clip(y / height, 0, 1)) * np.ones_like(x)
    colour = paint * shading[:, :, None]
    colour = np.where(glass[:, :, None], np.float32(0.12) + 0.3 * reflection[region], colour)
    colour = np.where(lights[:, :, None], np.array((0.75, 0.08, 0.06), dtype=np.float32), colour)
    colour = np.where(plate[:, :, None], np.array((0.9, 0.9, 0.88), dtype=np.float32), colour)
    colour = np.where(wheels[:, :, None], np.array((0.06, 0.06, 0.06), dtype=np.float32), colour)
    canvas.paint(region, body | cabin | wheels, depth, int(kind), colour)


def draw_pole(canvas: Canvas, rng: np.random.Generator, camera: StreetCamera, centre: float, depth: float) -> None:
    """A street pole, often carrying a traffic sign or a traffic light facing the camera."""
    height, radius = rng.uniform(3.5, 8.0), rng.uniform(0.06, 0.12)
    placed = upright_region(canvas, camera, centre - radius, centre + radius, 0.0, height, depth)
    if placed is None:
        return
    region, x, y = placed
    metal = np.float32(rng.uniform(0.35, 0.6))
    shade = metal * (0.55 + 0.45 * np.cos(np.clip((x - centre) / radius, -1, 1) * np.pi / 2)) * np.ones_like(y)
    canvas.paint(region, np.ones(shade.shape, dtype=bool), depth, POLE, np.repeat(shade[:, :, None], 3, axis=2))
    attachment = rng.random()
    if attachment < 0.45:
        draw_sign(canvas, rng, camera, centre, min(height - 0.4, rng.uniform(2.2, 3.2)), depth - 0.05)
    elif attachment < 0.7:
        draw_traffic_light(canvas, rng, camera, centre, height - 0.5, depth - 0.05)


def draw_sign(canvas: Canvas, rng: np.random.Generator, camera: StreetCamera, centre: float, middle: float,
              depth: float) -> None:
    """A traffic sign (disc, square or triangle with a light border) centred at height `middle`."""
    size = rng.uniform(0.5, 0.8)
    placed = upright_region(canvas, camera, centre - size / 2, centre + size / 2, middle - size / 2,
                            middle + size / 2, depth)
    if placed is None:
        return
    region, x, y = placed
    x, y = (x - centre) / (size / 2), (y - middle) / (size / 2)
    shape = rng.integers(3)
    if shape == 0:
        inside, inner = x ** 2 + y ** 2 < 1, x ** 2 + y ** 2 < 0.55
    elif shape == 1:
        inside, inner = (np.abs(x) < 0.9) & (np.abs(y) < 0.9), (np.abs(x) < 0.7) & (np.abs(y) < 0.7)
    else:
        inside = (y > -0.8) & (np.abs(x) < (0.9 - y) * 0.6)
        inner = (y > -0.55) & (np.abs(x) < (0.55 - y) * 0.6)
    face = jitter_colour(rng, SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))], 0.05)
    colour = np.where(inner[:, :, None], face, np.float32(0.9))
    canvas.paint(region, inside, depth, TRAFFIC_SIGN, colour)


def draw_traffic_light(canvas: Canvas, rng: np.random.Generator, camera: StreetCamera, centre: float, top: float,
                       depth: float) -> None:
    """A dark traffic light housing with three lamps, one of them lit, hanging below `top`."""
    placed = upright_region(canvas, camera, centre - 0.18, centre + 0.18, top - 0.9, top, depth)
    if placed is None:
        return
    region, x, y = placed
    lit = rng.integers(3)
    colour = np.full(np.broadcast_shapes(x.shape, y.shape) + (3,), rng.uniform(0.05, 0.15), dtype=np.float32)
    for lamp in range(3):
        lamp_centre = top - 0.15 - 0.3 * lamp
        lamp_mask = (x - centre) ** 2 + (y - lamp_centre) ** 2 < 0.1 ** 2
        colour[lamp_mask] = LAMP_COLOURS[lamp] if lamp == lit else (0.2, 0.2, 0.2)
    canvas.paint(region, np.ones(colour.shape[:2], dtype=bool), depth, TRAFFIC_LIGHT, colour)


def draw_tree(canvas: Canvas, rng: np.random.Generator, camera: StreetCamera, centre: float, depth: float) -> None:
    """A tree: a trunk and a leafy crown with a ragged outline, all labelled vegetation."""
    trunk_height, crown_width, crown_height = rng.uniform(1.8, 3.5), rng.uniform(1.5, 3.5), rng.uniform(1.8, 4.0)
    top = trunk_height + 2 * crown_height
    placed = upright_region(canvas, camera, centre - crown_width, centre + crown_width, 0.0, top, depth)
    if placed is None:
        return
    region, x, y = placed
    x = x - centre
    shape = np.broadcast_shapes(x.shape, y.shape)
    ragged = smooth_noise(rng, shape[0], shape[1], max(shape[1] / 5, 1.0))
    crown = (x / crown_width) ** 2 + ((y - trunk_height - crown_height) / crown_height) ** 2 < 1 + 0.35 * ragged
    trunk = (np.abs(x) < 0.15) & (y < trunk_height + crown_height)
    leaves = jitter_colour(rng, (0.22, 0.36, 0.12), 0.06) * (1 + 0.35 * ragged + 0.2 * np.clip(y - top / 2, -1, 1))[
        :, :, None]
    colour = np.where(crown[:, :, None], leaves, np.array((0.3, 0.22, 0.15), dtype=np.float32))
    canvas.paint(region, crown | trunk, depth, VEGETATION, colour)


def draw_street_furniture(canvas: Canvas, rng: np.random.Generator, camera: StreetCamera, street: Street,
                          reflection: np.ndarray) -> None:
    """Poles along the kerbs, trees along the facades, pedestrians on the sidewalks, cars in lanes
    and parked along the kerbs."""
    far = min(street.end, 120.0)
    for kerb, side in ((street.road_left - 0.4, -1), (street.road_right + 0.4, 1)):
        position = rng.uniform(2.0, 15.0)
        while position < far:
            draw_pole(canvas, rng, camera, kerb, position)
            position += rng.uniform(12.0, 35.0)
        if rng.random() < 0.5:
            outer = street.sidewalk_left + 0.8 if side < 0 else street.sidewalk_right - 0.8
            position = rng.uniform(3.0, 12.0)
            while position < far:
                draw_tree(canvas, rng, camera, outer, position)
                position += rng.uniform(8.0, 18.0)
    for _ in range(rng.poisson(4)):
        left_side = rng.random() < 0.5
        low, high = ((street.sidewalk_left + 0.4, street.road_left - 0.4) if left_side
                     else (street.road_right + 0.4, street.sidewalk_right - 0.4))
        draw_person(canvas, rng, camera, rng.uniform(low, high), rng.uniform(3.0, 45.0))
    lanes = np.arange(street.road_right - 1.65, street.road_left + 1.2, -3.3)
    for lane in lanes:
        position = rng.uniform(5.0, 25.0) if abs(lane) > 1.0 else rng.uniform(9.0, 30.0)
        while position < far and rng.random() < 0.75:
            draw_vehicle(canvas, rng, camera, lane + rng.uniform(-0.3, 0.3), position, reflection)
            position += rng.uniform(9.0, 30.0)
    for kerb in (street.road_left + 1.1, street.road_right - 1.1):
        if rng.random() < 0.5:
            position = rng.uniform(3.0, 10.0)
            while position < far and rng.random() < 0.85:
                draw_vehicle(canvas, rng, camera, kerb, position, reflection)
                position += rng.uniform(4.8, 7.0)


def draw_ego_vehicle(canvas: Canvas, rng: np.random.Generator, camera: StreetCamera) -> None:
    """The bonnet of the recording car along the bottom of the image (void: ego vehicle)."""
    rows, columns = pixel_centres(whole_image(canvas.height, canvas.width))
    offset = (columns - camera.centre_column) / canvas.width
    edge = canvas.height * (1 - rng.uniform(0.1, 0.2)) + canvas.height * rng.uniform(0.1, 0.3) * offset ** 2
    bonnet = rows > edge
    shine = np.float32(rng.uniform(0.05, 0.3)) * (1 - np.abs(offset))
    colour = np.repeat((shine * (rows > edge))[:, :, None], 3, axis=2) + np.float32(0.05)
    canvas.paint(whole_image(canvas.height, canvas.width), bonnet, NEAREST_DEPTH / 2, EGO_VEHICLE, colour)


def apply_haze(rng: np.random.Generator, canvas: Canvas, reflection: np.ndarray) -> np.ndarray:
    """Canvas colour with aerial perspective: distant surfaces fade towards the horizon sky colour."""
    visibility = rng.uniform(120.0, 500.0)
    finite = np.isfinite(canvas.depth)
    fade = np.where(finite, 1 - np.exp(-np.where(finite, canvas.depth, 0) / visibility), 0)[:, :, None]
    haze = reflection.mean(axis=(0, 1))
    return (canvas.colour * (1 - fade) + haze * fade).astype(np.float32)


def invalid_disparity(rng: np.random.Generator, canvas: Canvas) -> np.ndarray:
    """Where the stereo matcher gives no disparity: the left band seen by one camera only, the ego
    vehicle, and a few small holes."""
    invalid = np.zeros((canvas.height, canvas.width), dtype=bool)
    invalid[:, : int(round(canvas.width * rng.uniform(0.01, 0.05)))] = True
    invalid |= canvas.label == EGO_VEHICLE
    holes = smooth_noise(rng, canvas.height, canvas.width, max(canvas.width / 40, 2.0), octaves=2)
    invalid |= holes > rng.uniform(0.68, 0.8)
    return invalid


def cityscapes_scene(rng: np.random.Generator, height: int, width: int) -> tuple:
    """One random street scene at height x width: (rgb uint8 [H, W, 3], label_ids uint8 [H, W]
    Cityscapes ids 0..33, disparity uint16 [H, W] raw Cityscapes values p, with p = 256 d + 1 for
    a disparity of d pixels at 2048-pixel width and p = 0 where invalid: sky, ego vehicle, holes)."""
    camera = StreetCamera(
        focal=CITYSCAPES_FOCAL_PIXELS * width / CITYSCAPES_FULL_WIDTH,
        centre_column=width * rng.uniform(0.47, 0.53),
        horizon_row=height * rng.uniform(0.38, 0.47),
        height_m=rng.uniform(1.15, 1.45),
    )
    street = plan_street(rng)
    sky = sky_colour(rng, camera, height, width)
    canvas = Canvas(height, width, SKY, sky)
    draw_ground(canvas, rng, camera, street)
    for panel in plan_panels(rng, street):
        if panel.across:
            draw_cross_panel(canvas, rng, camera, panel, sky)
        else:
            draw_side_panel(canvas, rng, camera, panel, sky)
    draw_street_furniture(canvas, rng, camera, street, sky)
    draw_ego_vehicle(canvas, rng, camera)
    lit = apply_haze(rng, canvas, sky) * np.float32(rng.uniform(0.8, 1.15))
    image = finish_image(rng, lit, rng.uniform(0.008, 0.025))
    rgb = np.round(image * 255).astype(np.uint8)
    disparity = raw_disparity(canvas.depth, invalid_disparity(rng, canvas))
    return rgb, canvas.label.astype(np.uint8), disparity
