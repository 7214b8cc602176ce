"""Procedural indoor scenes in NYUv2 form (13 classes): an image in [0, 1], labels with -1 for
unlabelled pixels, depth in metres with 0 where missing and surface normals (unit vectors, 0 where
depth is missing), ray-cast from one 3D room so that labels, depth and normals agree.

World coordinates in metres: X to the right, Y up from the floor, Z forward. The room is an
axis-aligned box (floor, ceiling, four walls); furniture is built from axis-aligned boxes standing
on the floor or against the walls. Depth is the distance along the camera's optical axis, as a
Kinect measures it. Normals are given in camera coordinates: x towards the image's right, y towards
its top, z towards the camera (a surface seen head-on has normal (0, 0, 1)).
"""

from dataclasses import dataclass

import cv2
import numpy as np

from data.nyu import NYU_13_CLASS_NAMES
from data.synthetic.drawing import (Canvas, finish_image, jitter_colour, pixel_centres, pixel_region, smooth_noise,
                                    whole_image)

UNLABELLED = -1
(BED, BOOKS, CEILING, CHAIR, FLOOR, FURNITURE, OBJECTS, PICTURE, SOFA, TABLE, TV, WALL,
 WINDOW) = range(len(NYU_13_CLASS_NAMES))
MAX_DEPTH = 10.0
NEAREST_HIT = 0.05
FOCAL_PER_WIDTH = 0.81  # Kinect: 518.8 px focal length on 640-pixel-wide images

PLAIN, WOOD, FABRIC, BOOK_SPINES, SCREEN, ARTWORK, GLASS, DOORS = range(8)

WALL_COLOURS = ((0.88, 0.86, 0.8), (0.8, 0.78, 0.7), (0.75, 0.82, 0.85), (0.85, 0.75, 0.65), (0.7, 0.72, 0.66),
                (0.93, 0.92, 0.9))
WOOD_COLOURS = ((0.55, 0.38, 0.22), (0.7, 0.55, 0.36), (0.35, 0.24, 0.16), (0.8, 0.68, 0.5))
FABRIC_COLOURS = ((0.45, 0.5, 0.6), (0.6, 0.3, 0.25), (0.35, 0.45, 0.3), (0.75, 0.7, 0.6), (0.3, 0.3, 0.32),
                  (0.85, 0.85, 0.88))


@dataclass(frozen=True)
class RoomCamera:
    """A pinhole camera at `position` with rotation `rotation` (camera to world, 3 x 3), focal
    length and optical centre in pixels."""

    focal: float
    centre_column: float
    centre_row: float
    position: np.ndarray
    rotation: np.ndarray

    def rays(self, region: tuple) -> np.ndarray:
        """World directions float32 [h, w, 3] through the pixel centres of `region`, scaled so that
        the distance t along a ray is the depth along the optical axis."""
        rows, columns = pixel_centres(region)
        camera_x = np.broadcast_to((columns - self.centre_column) / self.focal, (rows.shape[0], columns.shape[1]))
        camera_y = np.broadcast_to(-(rows - self.centre_row) / self.focal, camera_x.shape)
        camera_rays = np.stack((camera_x, camera_y, np.ones_like(camera_x)), axis=-1)
        return (camera_rays @ self.rotation.T.astype(np.float32)).astype(np.float32)

    def image_region(self, low: np.ndarray, high: np.ndarray, height: int, width: int):
        """The image region covering the projection of the box [low, high], the whole image if the
        box reaches behind the camera, or None if it projects outside the image."""
        corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
        camera_points = (corners - self.position) @ self.rotation
        if (camera_points[:, 2] <= NEAREST_HIT).any():
            return whole_image(height, width)
        columns = self.centre_column + self.focal * camera_points[:, 0] / camera_points[:, 2]
        rows = self.centre_row - self.focal * camera_points[:, 1] / camera_points[:, 2]
        return pixel_region(rows.min() - 1, rows.max() + 1, columns.min() - 1, columns.max() + 1, height, width)


@dataclass(frozen=True)
class Room:
    """Extent of the room: X from `left` to `right`, Z from `back` (behind the camera) to `front`,
    Y from 0 (floor) to `height`."""

    left: float
    right: float
    back: float
    front: float
    height: float


@dataclass(frozen=True)
class Box:
    """An axis-aligned box [low, high] (world metres) with its class, base colour and texture."""

    low: tuple
    high: tuple
    label: int
    colour: np.ndarray
    texture: int


@dataclass(frozen=True)
class WallPlacement:
    """Maps local furniture coordinates (along the wall from `start`, out from the wall into the
    room, up) to world coordinates, for the wall at `wall` ("front", "left" or "right")."""

    wall: str
    start: float
    room: Room

    def box(self, along: tuple, out: tuple, up: tuple, label: int, colour: np.ndarray, texture: int) -> Box:
        """A Box from local intervals (along0, along1), (out0, out1), (up0, up1)."""
        if self.wall == "front":
            x, z = (self.start + along[0], self.start + along[1]), (self.room.front - out[1], self.room.front - out[0])
        elif self.wall == "left":
            x, z = (self.room.left + out[0], self.room.left + out[1]), (self.start + along[0], self.start + along[1])
        else:
            x, z = (self.room.right - out[1], self.room.right - out[0]), (self.start + along[0], self.start + along[1])
        return Box((x[0], up[0], z[0]), (x[1], up[1], z[1]), label, colour, texture)

    def footprint(self, length: float, depth: float) -> tuple:
        """The floor rectangle (x0, x1, z0, z1) of an item `length` along the wall, `depth` deep."""
        box = self.box((0, length), (0, depth), (0, 1), UNLABELLED, np.zeros(3, dtype=np.float32), PLAIN)
        return box.low[0], box.high[0], box.low[2], box.high[2]


class IndoorCanvas(Canvas):
    """A Canvas that also keeps each pixel's surface normal: `normal` float32 [H, W, 3], world
    coordinates, unit vectors where a surface is painted, 0 elsewhere."""

    def __init__(self, height: int, width: int, background_label: int, background_colour: np.ndarray):
        """An empty canvas (see Canvas) without any surface normal."""
        super().__init__(height, width, background_label, background_colour)
        self.normal = np.zeros((height, width, 3), dtype=np.float32)

    def paint_surface(self, region: tuple, mask: np.ndarray, depth, label, colour, normal: np.ndarray) -> None:
        """Canvas.paint, also recording `normal` (world unit vectors [3] or region shape x 3) where painted."""
        drawn = self.paint(region, mask, depth, label, colour)
        self.normal[region][drawn] = np.broadcast_to(normal, drawn.shape + (3,))[drawn]


def plan_camera(rng: np.random.Generator, height: int, width: int) -> RoomCamera:
    """A hand-held camera 1.0-1.6 m above the floor, turned a little sideways and tilted down."""
    yaw, pitch, roll = rng.uniform(-0.45, 0.45), rng.uniform(-0.3, 0.1), rng.uniform(-0.04, 0.04)
    turn = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    tilt = np.array([[1, 0, 0], [0, np.cos(pitch), np.sin(pitch)], [0, -np.sin(pitch), np.cos(pitch)]])
    twist = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    return RoomCamera(
        focal=FOCAL_PER_WIDTH * width,
        centre_column=width * rng.uniform(0.48, 0.52),
        centre_row=height * rng.uniform(0.48, 0.52),
        position=np.array([0.0, rng.uniform(1.0, 1.6), 0.0]),
        rotation=turn @ tilt @ twist,
    )


def plan_room(rng: np.random.Generator) -> Room:
    """A room 3-6.5 m wide and 3.5-9 m deep around the camera, 2.4-3.1 m high."""
    width = rng.uniform(3.0, 6.5)
    left = -rng.uniform(0.8, width - 0.8)
    return Room(left, left + width, -rng.uniform(0.4, 1.5), rng.uniform(3.5, 8.5), rng.uniform(2.4, 3.1))


def shading(camera: RoomCamera, room: Room, points: np.ndarray, normals: np.ndarray, ambient: float) -> np.ndarray:
    """Brightness float32 [h, w] of surface points [h, w, 3] with normals [h, w, 3] (or [3]) under
    a ceiling light at the room centre plus `ambient` light."""
    light = np.array(((room.left + room.right) / 2, room.height - 0.2, (room.back + room.front) / 2 + 0.5),
                     dtype=np.float32)
    towards = light - points
    distance = np.linalg.norm(towards, axis=-1) + 1e-6
    facing = np.clip(np.sum(towards * normals, axis=-1) / distance, 0, 1)
    return (ambient + (1 - ambient) * facing / (1 + (distance / 4.0) ** 2) * 1.6).astype(np.float32)


def draw_room(canvas: IndoorCanvas, rng: np.random.Generator, camera: RoomCamera, room: Room, ambient: float) -> None:
    """Floor (planks, tiles or carpet), walls (paint with a skirting board) and ceiling."""
    region = whole_image(canvas.height, canvas.width)
    rays = camera.rays(region)
    bounds_low = np.array((room.left, 0.0, room.back), dtype=np.float32)
    bounds_high = np.array((room.right, room.height, room.front), dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        exits = np.where(rays > 0, (bounds_high - camera.position) / rays, (bounds_low - camera.position) / rays)
    exits = np.where(np.isfinite(exits) & (exits > 0), exits, np.inf)
    axis = np.argmin(exits, axis=-1)
    depth = np.min(exits, axis=-1)
    points = camera.position + rays * depth[:, :, None]
    floor = (axis == 1) & (rays[:, :, 1] < 0)
    ceiling = (axis == 1) & (rays[:, :, 1] >= 0)
    normals = np.zeros(points.shape, dtype=np.float32)
    normals[..., 1] = np.where(floor, 1.0, np.where(ceiling, -1.0, 0.0))
    normals[..., 0] = np.where(axis == 0, -np.sign(rays[..., 0]), 0.0)
    normals[..., 2] = np.where(axis == 2, -np.sign(rays[..., 2]), 0.0)
    label = np.where(floor, FLOOR, np.where(ceiling, CEILING, WALL))

    paint = jitter_colour(rng, WALL_COLOURS[rng.integers(len(WALL_COLOURS))], 0.05)
    wall_colour = paint * (1 + 0.04 * smooth_noise(rng, canvas.height, canvas.width, 6.0))[:, :, None]
    skirting = points[..., 1] < 0.09
    wall_colour[skirting] = jitter_colour(rng, (0.9, 0.9, 0.88), 0.05)
    ceiling_colour = np.full(points.shape, rng.uniform(0.85, 0.95), dtype=np.float32)
    floor_colour = floor_appearance(rng, points[..., 0], points[..., 2])
    colour = np.where(floor[:, :, None], floor_colour, np.where(ceiling[:, :, None], ceiling_colour, wall_colour))
    colour *= shading(camera, room, points, normals, ambient)[:, :, None]
    canvas.paint_surface(region, np.ones(depth.shape, dtype=bool), depth, label, colour, normals)


def floor_appearance(rng: np.random.Generator, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Floor colour [h, w, 3] at floor coordinates (x, z): wooden planks, tiles or carpet."""
    style = rng.integers(3)
    variation = rng.uniform(-1, 1, size=64).astype(np.float32)
    if style == 0:
        base = jitter_colour(rng, WOOD_COLOURS[rng.integers(len(WOOD_COLOURS))], 0.05)
        plank = np.floor(x / 0.16).astype(np.int64)
        board = np.floor(z / 1.2 + 0.37 * plank).astype(np.int64)
        brightness = 1 + 0.12 * variation[(plank * 7 + board * 13) % 64] + 0.05 * np.sin(z * 23 + plank)
        brightness *= np.where((x % 0.16) < 0.008, 0.6, 1.0)
    elif style == 1:
        base = jitter_colour(rng, (0.78, 0.76, 0.72), 0.1)
        tile = rng.uniform(0.3, 0.6)
        brightness = np.where(((x % tile) < 0.015) | ((z % tile) < 0.015), 0.55, 1.0)
        tile_index = (np.floor(x / tile) * 5 + np.floor(z / tile) * 11).astype(np.int64) % 64
        brightness = brightness * (1 + 0.06 * variation[tile_index])
    else:
        base = jitter_colour(rng, FABRIC_COLOURS[rng.integers(len(FABRIC_COLOURS))], 0.05)
        brightness = 1 + 0.1 * variation[(np.floor(x / 0.02) * 3 + np.floor(z / 0.02) * 17).astype(np.int64) % 64]
    return (base * brightness[:, :, None]).astype(np.float32)


def box_appearance(rng: np.random.Generator, box: Box, horizontal: np.ndarray, vertical: np.ndarray,
                   on_top: np.ndarray) -> np.ndarray:
    """Colour [h, w, 3] of `box` at face coordinates in metres from its low corner: `horizontal`
    (along the face), `vertical` (up the face, or across it on a top face); `on_top` marks top faces."""
    shape = horizontal.shape
    colour = np.broadcast_to(box.colour, shape + (3,)).astype(np.float32)
    if box.texture == WOOD:
        grain = np.sin(horizontal * 45 + 4 * np.sin(vertical * 7)) * 0.08
        return colour * (1 + grain)[:, :, None]
    if box.texture == FABRIC:
        weave = rng.uniform(-1, 1, size=97).astype(np.float32)
        index = (np.floor(horizontal / 0.015) * 7 + np.floor(vertical / 0.015) * 31).astype(np.int64) % 97
        return colour * (1 + 0.07 * weave[index])[:, :, None]
    if box.texture == BOOK_SPINES:
        spines = rng.uniform(0.1, 0.85, size=(29, 3)).astype(np.float32)
        book = np.floor(horizontal / rng.uniform(0.025, 0.05)).astype(np.int64)
        gap = (horizontal % 0.04) < 0.003
        return np.where(gap[:, :, None], np.float32(0.05), spines[book % 29])
    if box.texture == SCREEN:
        size_h, size_v = box_extent_on_face(box)
        bezel = (np.minimum(horizontal, size_h - horizontal) < 0.03) | (np.minimum(vertical, size_v - vertical) < 0.03)
        glow = np.float32(rng.uniform(0.03, 0.12)) + 0.08 * (horizontal / max(size_h, 1e-3))
        screen = np.where(bezel | on_top, np.float32(0.02), glow)
        return np.repeat(screen[:, :, None], 3, axis=2)
    if box.texture == ARTWORK:
        size_h, size_v = box_extent_on_face(box)
        palette = rng.uniform(0.05, 0.95, size=(4, 3)).astype(np.float32)
        pattern = np.sin(horizontal * rng.uniform(3, 12)) + np.cos(vertical * rng.uniform(3, 12) + horizontal * 2)
        artwork = palette[np.clip(((pattern + 2) / 4 * 4).astype(np.int64), 0, 3)]
        frame = (np.minimum(horizontal, size_h - horizontal) < 0.04) | (np.minimum(vertical, size_v - vertical) < 0.04)
        return np.where(frame[:, :, None], box.colour, artwork)
    if box.texture == GLASS:
        size_h, size_v = box_extent_on_face(box)
        view = np.stack((0.75 + 0.2 * vertical / size_v, 0.85 + 0.1 * vertical / size_v,
                         np.full(shape, 0.97, dtype=np.float32)), axis=-1)
        bars = (np.abs(horizontal - size_h / 2) < 0.03) | (np.abs(vertical - size_v * 0.6) < 0.03)
        frame = bars | (np.minimum(horizontal, size_h - horizontal) < 0.06) | (np.minimum(vertical, size_v - vertical) < 0.06)
        return np.where(frame[:, :, None], box.colour, view.astype(np.float32))
    if box.texture == DOORS:
        door_width = box_extent_on_face(box)[0] / max(int(round(box_extent_on_face(box)[0] / 0.5)), 1)
        across_door, up_drawer = horizontal % door_width, vertical % 0.7
        seam = (across_door < 0.012) | (up_drawer < 0.012)
        handle = (np.abs(across_door - door_width + 0.06) < 0.015) & (np.abs(up_drawer - 0.45) < 0.05)
        relief = np.where(seam, 0.55, np.where(handle, 1.6, 1.0)) * np.where(on_top, 1.0, 0.92)
        return colour * relief[:, :, None]
    return colour * (1 + 0.04 * np.sin(horizontal * 17 + vertical * 11))[:, :, None]


def box_extent_on_face(box: Box) -> tuple:
    """(horizontal, vertical) size of the box's largest vertical face."""
    size = np.subtract(box.high, box.low)
    return max(size[0], size[2]), size[1]


def draw_box(canvas: IndoorCanvas, rng: np.random.Generator, camera: RoomCamera, room: Room, box: Box,
             ambient: float) -> None:
    """Ray-cast one box (slab test) and paint its visible faces, textured and shaded."""
    low, high = np.array(box.low, dtype=np.float32), np.array(box.high, dtype=np.float32)
    region = camera.image_region(low, high, canvas.height, canvas.width)
    if region is None:
        return
    rays = camera.rays(region)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = (low - camera.position) / rays
        second = (high - camera.position) / rays
    entry_per_axis = np.nan_to_num(np.minimum(first, second), nan=-np.inf)
    exit_per_axis = np.nan_to_num(np.maximum(first, second), nan=np.inf)
    entry, leave = entry_per_axis.max(axis=-1), exit_per_axis.min(axis=-1)
    hit = (entry <= leave) & (entry > NEAREST_HIT)
    if not hit.any():
        return
    axis = np.argmax(entry_per_axis, axis=-1)
    depth = np.where(hit, entry, np.inf).astype(np.float32)
    points = camera.position + rays * np.where(hit, entry, 0)[:, :, None]
    normals = np.zeros(points.shape, dtype=np.float32)
    for dimension in range(3):
        normals[..., dimension] = np.where(axis == dimension, -np.sign(rays[..., dimension]), 0)
    local = points - low
    on_top = axis == 1
    horizontal = np.where(axis == 0, local[..., 2], local[..., 0])
    vertical = np.where(on_top, local[..., 2], local[..., 1])
    colour = box_appearance(rng, box, horizontal, vertical, on_top)
    colour = colour * shading(camera, room, points, normals, ambient)[:, :, None]
    canvas.paint_surface(region, hit, depth, box.label, colour, normals)


def random_choice(rng: np.random.Generator, options: tuple):
    """One element of `options`, drawn uniformly."""
    return options[rng.integers(len(options))]


def bed(place: WallPlacement, rng: np.random.Generator, length: float) -> list:
    """A bed with its head against the wall: frame, mattress with a blanket, headboard, pillows."""
    wood = jitter_colour(rng, random_choice(rng, WOOD_COLOURS), 0.05)
    blanket = jitter_colour(rng, random_choice(rng, FABRIC_COLOURS), 0.08)
    extent = rng.uniform(1.9, 2.2)
    boxes = [place.box((0, length), (0, extent), (0, 0.3), BED, wood, WOOD),
             place.box((0.02, length - 0.02), (0.05, extent - 0.02), (0.3, 0.55), BED, blanket, FABRIC),
             place.box((0, length), (0, 0.06), (0, rng.uniform(0.8, 1.2)), BED, wood, WOOD)]
    pillow = jitter_colour(rng, (0.92, 0.92, 0.9), 0.05)
    for start in (0.1, length / 2 + 0.05):
        boxes.append(place.box((start, start + length / 2 - 0.15), (0.1, 0.5), (0.55, 0.68), BED, pillow, FABRIC))
    return boxes


def sofa(place: WallPlacement, rng: np.random.Generator, length: float) -> list:
    """A sofa with its back against the wall: seat, back rest and two arms."""
    fabric = jitter_colour(rng, random_choice(rng, FABRIC_COLOURS), 0.08)
    return [place.box((0, length), (0, 0.9), (0.05, 0.45), SOFA, fabric, FABRIC),
            place.box((0, length), (0, 0.25), (0.45, 0.85), SOFA, fabric, FABRIC),
            place.box((0, 0.2), (0, 0.9), (0.45, 0.65), SOFA, fabric, FABRIC),
            place.box((length - 0.2, length), (0, 0.9), (0.45, 0.65), SOFA, fabric, FABRIC)]


def cabinet(place: WallPlacement, rng: np.random.Generator, length: float, height: float) -> list:
    """A cabinet, dresser or wardrobe (furniture) with doors, sometimes with objects on top."""
    depth = rng.uniform(0.4, 0.6)
    colour = jitter_colour(rng, random_choice(rng, WOOD_COLOURS + ((0.9, 0.9, 0.88),)), 0.05)
    boxes = [place.box((0, length), (0, depth), (0, height), FURNITURE, colour, DOORS)]
    if height < 1.3:
        boxes.extend(small_objects(rng, place.footprint(length, depth), height))
    return boxes


def small_objects(rng: np.random.Generator, surface: tuple, top: float) -> list:
    """Up to three small objects (boxes, vases, bins) standing on the rectangle `surface`
    (x0, x1, z0, z1) at height `top`."""
    x0, x1, z0, z1 = surface
    boxes = []
    for _ in range(rng.integers(0, 4)):
        size = rng.uniform(0.08, min(0.3, x1 - x0, z1 - z0))
        x, z = rng.uniform(x0, x1 - size), rng.uniform(z0, z1 - size)
        colour = rng.uniform(0.1, 0.9, size=3).astype(np.float32)
        boxes.append(Box((x, top, z), (x + size, top + rng.uniform(0.08, 0.4), z + size), OBJECTS, colour, PLAIN))
    return boxes


def bookshelf(place: WallPlacement, rng: np.random.Generator, length: float) -> list:
    """A bookshelf (furniture) with rows of books on its shelves."""
    depth, height = 0.35, rng.uniform(1.4, 2.2)
    colour = jitter_colour(rng, random_choice(rng, WOOD_COLOURS), 0.05)
    boxes = [place.box((0, length), (0, depth), (0, height), FURNITURE, colour, WOOD)]
    for shelf in np.arange(0.05, height - 0.3, 0.36):
        filled = rng.uniform(0.4, 1.0) * (length - 0.1)
        start = rng.uniform(0.05, length - 0.05 - filled)
        boxes.append(place.box((start, start + filled), (depth - 0.01, depth + 0.02),
                               (shelf + 0.02, shelf + rng.uniform(0.2, 0.3)), BOOKS, colour, BOOK_SPINES))
    return boxes


def television(place: WallPlacement, rng: np.random.Generator, length: float) -> list:
    """A low cabinet with a television on it."""
    height = rng.uniform(0.4, 0.7)
    boxes = cabinet(place, rng, length, height)[:1]
    screen = min(length - 0.1, rng.uniform(0.8, 1.4))
    start = (length - screen) / 2
    boxes.append(place.box((start, start + screen), (0.1, 0.16), (height, height + screen * 0.6), TV,
                           np.zeros(3, dtype=np.float32), SCREEN))
    return boxes


def wall_hanging(place: WallPlacement, rng: np.random.Generator, length: float) -> list:
    """A picture or a window flat on the wall (the window always reaches lower)."""
    if rng.random() < 0.5:
        frame = jitter_colour(rng, random_choice(rng, WOOD_COLOURS + ((0.1, 0.1, 0.1),)), 0.05)
        bottom = rng.uniform(1.1, 1.6)
        return [place.box((0, length), (0, 0.03), (bottom, bottom + rng.uniform(0.3, 0.8)), PICTURE, frame, ARTWORK)]
    frame = jitter_colour(rng, (0.92, 0.92, 0.9), 0.05)
    bottom = rng.uniform(0.7, 1.0)
    return [place.box((0, length), (0, 0.04), (bottom, min(bottom + rng.uniform(1.0, 1.6), place.room.height - 0.2)),
                      WINDOW, frame, GLASS)]


def table_with_chairs(rng: np.random.Generator, room: Room, x: float, z: float) -> list:
    """A free-standing table centred at (x, z) with chairs around it and objects on it."""
    length, width, top = rng.uniform(0.9, 1.7), rng.uniform(0.6, 1.0), rng.uniform(0.7, 0.76)
    wood = jitter_colour(rng, random_choice(rng, WOOD_COLOURS), 0.05)
    x0, z0 = x - length / 2, z - width / 2
    boxes = [Box((x0, top - 0.04, z0), (x0 + length, top, z0 + width), TABLE, wood, WOOD)]
    for leg_x in (x0 + 0.03, x0 + length - 0.08):
        for leg_z in (z0 + 0.03, z0 + width - 0.08):
            boxes.append(Box((leg_x, 0, leg_z), (leg_x + 0.05, top - 0.04, leg_z + 0.05), TABLE, wood, WOOD))
    boxes.extend(small_objects(rng, (x0, x0 + length, z0, z0 + width), top))
    chair_colour = jitter_colour(rng, random_choice(rng, WOOD_COLOURS + FABRIC_COLOURS), 0.05)
    for side in (-1, 1):
        if rng.random() < 0.8:
            boxes.extend(chair(rng, x + side * rng.uniform(0.1, length / 3), z - side * (width / 2 + 0.25), side,
                               chair_colour))
    return boxes


def chair(rng: np.random.Generator, x: float, z: float, facing: int, colour: np.ndarray) -> list:
    """A chair centred at (x, z): seat, four legs, and a back rest on the side away from `facing`
    (+1: the chair faces +Z)."""
    half, seat = 0.22, rng.uniform(0.42, 0.48)
    back_z = z - facing * half
    boxes = [Box((x - half, seat - 0.04, z - half), (x + half, seat, z + half), CHAIR, colour, WOOD),
             Box((x - half, seat, min(back_z, back_z + facing * 0.04)),
                 (x + half, seat + rng.uniform(0.35, 0.5), max(back_z, back_z + facing * 0.04)), CHAIR, colour, WOOD)]
    for leg_x in (x - half, x + half - 0.04):
        for leg_z in (z - half, z + half - 0.04):
            boxes.append(Box((leg_x, 0, leg_z), (leg_x + 0.04, seat - 0.04, leg_z + 0.04), CHAIR, colour, WOOD))
    return boxes


def clutter(rng: np.random.Generator, room: Room) -> list:
    """Unannotated things on the floor (bags, boxes): label -1."""
    boxes = []
    for _ in range(rng.integers(0, 3)):
        size = rng.uniform(0.2, 0.6, size=3)
        x = rng.uniform(room.left + 0.1, room.right - 0.1 - size[0])
        z = rng.uniform(1.2, room.front - 0.1 - size[2])
        boxes.append(Box((x, 0, z), (x + size[0], size[1], z + size[2]), UNLABELLED,
                         rng.uniform(0.1, 0.8, size=3).astype(np.float32), FABRIC))
    return boxes


def overlaps(footprint: tuple, taken: list) -> bool:
    """Whether the floor rectangle (x0, x1, z0, z1) overlaps any rectangle in `taken`."""
    x0, x1, z0, z1 = footprint
    return any(x0 < other[1] and other[0] < x1 and z0 < other[3] and other[2] < z1 for other in taken)


def furnish(rng: np.random.Generator, room: Room) -> list:
    """Boxes of the room's furniture: items against the walls (beds, sofas, cabinets, shelves, a TV),
    pictures and windows on the walls, a table with chairs, objects and unlabelled clutter."""
    boxes, taken = [], [(-0.6, 0.6, room.back, 1.0)]
    walls = (("front", room.left, room.right), ("left", 1.0, room.front), ("right", 1.0, room.front))
    for _ in range(rng.integers(4, 9)):
        wall, low, high = random_choice(rng, walls)
        item = random_choice(rng, ("bed", "sofa", "cabinet", "bookshelf", "television", "cabinet"))
        length = {"bed": rng.uniform(1.4, 1.9), "sofa": rng.uniform(1.6, 2.4)}.get(item, rng.uniform(0.6, 1.8))
        for _ in range(6):
            if high - low - length < 0.1:
                break
            place = WallPlacement(wall, rng.uniform(low, high - length), room)
            footprint = place.footprint(length, 2.2 if item == "bed" else 0.9)
            if not overlaps(footprint, taken):
                taken.append(footprint)
                if item == "bed":
                    boxes.extend(bed(place, rng, length))
                elif item == "sofa":
                    boxes.extend(sofa(place, rng, length))
                elif item == "bookshelf":
                    boxes.extend(bookshelf(place, rng, length))
                elif item == "television":
                    boxes.extend(television(place, rng, length))
                else:
                    boxes.extend(cabinet(place, rng, length, rng.uniform(0.5, 2.1)))
                break
    for _ in range(rng.integers(1, 5)):
        wall, low, high = random_choice(rng, walls)
        length = rng.uniform(0.4, 1.5)
        if high - low - length > 0.1:
            boxes.extend(wall_hanging(WallPlacement(wall, rng.uniform(low, high - length), room), rng, length))
    if rng.random() < 0.6:
        x, z = rng.uniform(room.left + 1.0, room.right - 1.0), rng.uniform(2.0, max(room.front - 1.2, 2.1))
        if not overlaps((x - 1.2, x + 1.2, z - 1.0, z + 1.0), taken):
            boxes.extend(table_with_chairs(rng, room, x, z))
    boxes.extend(clutter(rng, room))
    return boxes


def missing_depth(rng: np.random.Generator, canvas: Canvas) -> np.ndarray:
    """Where a Kinect gives no depth: often the window glass, beyond MAX_DEPTH, in a band on the far
    side of depth edges (the projector's shadow), and in a few blobs."""
    missing = canvas.depth > MAX_DEPTH
    if rng.random() < 0.7:
        missing |= canvas.label == WINDOW
    jump = np.zeros(missing.shape, dtype=bool)
    jump[:, 1:] = (canvas.depth[:, 1:] - canvas.depth[:, :-1]) > 0.3
    missing |= cv2.dilate(jump.astype(np.uint8), np.ones((1, 3), dtype=np.uint8)).astype(bool)
    blobs = smooth_noise(rng, canvas.height, canvas.width, max(canvas.width / 25, 2.0), octaves=2)
    missing |= blobs > rng.uniform(0.65, 0.8)
    return missing


def unannotated(label: np.ndarray) -> np.ndarray:
    """Pixels the annotators left out: a thin band along every class boundary."""
    kernel = np.ones((3, 3), dtype=np.uint8)
    shifted = (label + 1).astype(np.uint8)
    return cv2.dilate(shifted, kernel) != cv2.erode(shifted, kernel)


def camera_normals(camera: RoomCamera, world_normals: np.ndarray) -> np.ndarray:
    """World normals [H, W, 3] in camera coordinates (x towards the image's right, y towards its top, z
    towards the camera), float32; zero vectors stay 0."""
    normals = world_normals.astype(np.float64) @ camera.rotation  # camera axes: right, up, forward
    normals[..., 2] *= -1
    return normals.astype(np.float32)


def indoor_scene_with_normals(rng: np.random.Generator, height: int, width: int) -> tuple:
    """One random room at height x width: (image float32 [H, W, 3] in [0, 1], label int64 [H, W]
    with the 13 NYUv2 classes and -1 unlabelled, depth float32 [H, W, 1] in metres, 0 missing, normal
    float32 [H, W, 3] unit vectors in camera coordinates, all three components 0 where depth is missing).
    Draws from `rng` exactly what indoor_scene draws."""
    camera = plan_camera(rng, height, width)
    room = plan_room(rng)
    ambient = rng.uniform(0.35, 0.6)
    canvas = IndoorCanvas(height, width, UNLABELLED, np.zeros(3, dtype=np.float32))
    draw_room(canvas, rng, camera, room, ambient)
    for box in furnish(rng, room):
        draw_box(canvas, rng, camera, room, box, ambient)
    exposure = np.float32(rng.uniform(0.75, 1.1))
    image = finish_image(rng, canvas.colour * exposure, rng.uniform(0.008, 0.02))
    missing = missing_depth(rng, canvas)
    depth = np.where(missing, 0, canvas.depth).astype(np.float32)
    label = np.where(unannotated(canvas.label), UNLABELLED, canvas.label).astype(np.int64)
    normal = np.where(missing[:, :, None], np.float32(0), camera_normals(camera, canvas.normal))
    return image, label, depth[:, :, None], normal


def indoor_scene(rng: np.random.Generator, height: int, width: int) -> tuple:
    """One random room at height x width: (image float32 [H, W, 3] in [0, 1], label int64 [H, W]
    with the 13 NYUv2 classes and -1 unlabelled, depth float32 [H, W, 1] in metres, 0 missing), the
    scene of indoor_scene_with_normals without its normals."""
    return indoor_scene_with_normals(rng, height, width)[:3]
