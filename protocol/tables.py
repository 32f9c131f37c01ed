"""The seed's tables, complete and typed, with lookups in both directions.

Everything here is transcribed from the protocol's reference document (the seed
``004``); ``tests/test_tables_against_seed.py`` reads that document and checks
these tables entry by entry. Two repairs, both deliberate: the seed's garbled
``Bokmรฅl`` is ``Bokmål``, and its ``prepreocess`` is ``preprocess``. The
language table has 297 entries because the seed skips id 193.

The error table is the seed's one documented id (19, invalid API key) plus the
ids this project's server uses; unknown ids from other servers are kept as
they are by the codec, never rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Final, TypeVar

__all__ = [
    "CLIP_SKIP_MAX",
    "CONTROLNETS_MAX",
    "EXTENSIONS_MAX",
    "EXTENSION_NAME_MAX_LENGTH",
    "LORAS_MAX",
    "MODEL_ID_MAX_LENGTH",
    "URL_MAX_LENGTH",
    "CONTROL_MODES",
    "CONTROLNET_PREPROCESSORS",
    "DEFAULT_MODEL_ID",
    "DEFAULT_GUIDANCE",
    "DEFAULT_STEPS",
    "ERRORS",
    "GUIDANCE_MAX",
    "DEFAULT_EXTENSIONS",
    "KNOWN_EXTENSIONS",
    "LANGUAGES",
    "MODEL_FAMILIES",
    "MODELS",
    "SCHEDULERS",
    "SEED_MAX",
    "SEED_MIN",
    "SIZES",
    "SIZE_MAX",
    "SIZE_MIN",
    "SIZE_STEP",
    "STEPS_MAX",
    "STYLES",
    "TASK_TYPE_NAMES",
    "ErrorId",
    "ErrorInfo",
    "ModelFamily",
    "SizeInfo",
    "TaskType",
    "error_code_for",
    "is_retryable",
    "language_id_for",
    "language_name",
    "model_family",
    "model_id_for",
    "model_name",
    "preprocessors_for",
    "scheduler_id_for",
    "scheduler_name",
    "size_for",
    "size_id_for",
    "style_id_for",
    "style_name",
]

K = TypeVar("K")
V = TypeVar("V")

#: Seeds: absent means random; otherwise within these bounds (more than 64 bits).
SEED_MIN: Final = 1
SEED_MAX: Final = 922_337_203_470_729_216_000

#: Inference steps: when a task does not say, and the most a task may ask for.
DEFAULT_STEPS: Final = 20
STEPS_MAX: Final = 100

#: Guidance (``gScale``): when a task does not say, and the most (the least is 0).
DEFAULT_GUIDANCE: Final = 7.5
GUIDANCE_MAX: Final = 10

#: ``clipSkip`` (the least is 0).
CLIP_SKIP_MAX: Final = 2

#: Bounds on what one request may carry, so that neither side can be made to validate,
#: store or answer without limit: LoRAs and ControlNet guides per task, characters of a
#: model id (AIR ids included) and of a URL, extensions asked for and their names.
LORAS_MAX: Final = 8
CONTROLNETS_MAX: Final = 8
MODEL_ID_MAX_LENGTH: Final = 256
URL_MAX_LENGTH: Final = 2048
EXTENSIONS_MAX: Final = 16
EXTENSION_NAME_MAX_LENGTH: Final = 64

#: Extensions this package understands, negotiated in ``newConnection`` (DESIGN section 3).
#: ``preview``: progress frames carry a small JPEG of the image so far (``previewBase64``).
KNOWN_EXTENSIONS: Final = frozenset(
    {"seed", "progress", "preview", "cancel", "taskErrors", "resume"}
)
#: What a client asks for unless told otherwise: all of them but ``preview``, which costs the
#: server an encode per step and the socket a few KB per step (a UI asks for it).
DEFAULT_EXTENSIONS: Final = KNOWN_EXTENSIONS - {"preview"}


# -- sizes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SizeInfo:
    """One predefined image size."""

    width: int
    height: int
    label: str
    sdxl: bool = False


SIZES: Final[Mapping[int, SizeInfo]] = MappingProxyType(
    {
        1: SizeInfo(512, 512, "512x square"),
        2: SizeInfo(512, 768, "2:3 portrait"),
        3: SizeInfo(512, 1024, "1:2 portrait"),
        4: SizeInfo(768, 512, "2:3 landscape"),
        5: SizeInfo(1024, 512, "2:1 landscape"),
        6: SizeInfo(704, 512, "4:3 landscape"),
        7: SizeInfo(896, 512, "16:9 landscape"),
        8: SizeInfo(512, 896, "9:16 portrait"),
        9: SizeInfo(512, 704, "3:4 portrait"),
        11: SizeInfo(1024, 1024, "1024x square", sdxl=True),
        16: SizeInfo(1344, 768, "16:9 landscape", sdxl=True),
        17: SizeInfo(768, 1344, "9:16 portrait", sdxl=True),
        20: SizeInfo(640, 960, "2:3 portrait", sdxl=True),
        21: SizeInfo(960, 640, "3:2 landscape", sdxl=True),
    }
)

_SIZE_IDS: Final = {(s.width, s.height): i for i, s in SIZES.items()}


#: Free sizes (this project's ``width``/``height`` extension of ``newTask``, for sizes the
#: table lacks): each side within these bounds and a multiple of SIZE_STEP (the latent grid
#: of a diffusion model: 8 pixels per latent cell).
SIZE_MIN: Final = 64
SIZE_MAX: Final = 2048
SIZE_STEP: Final = 8


def size_for(size_id: int) -> tuple[int, int]:
    """Return ``(width, height)`` of a size id; raise ``LookupError`` if unknown."""
    info = _get(SIZES, size_id, "sizeId")
    return info.width, info.height


def size_id_for(width: int, height: int) -> int:
    """Return the size id of ``width`` x ``height``; raise ``LookupError`` if none."""
    return _get(_SIZE_IDS, (width, height), "size")


# -- task types ----------------------------------------------------------------------------


class TaskType(IntEnum):
    """The ``taskType`` ids."""

    TEXT_TO_IMAGE = 1
    IMAGE_TO_IMAGE = 2
    INPAINTING = 3
    IMAGE_TO_TEXT = 4
    PROMPT_ENHANCER = 5
    IMAGE_UPSCALE = 6
    IMAGE_UPLOAD = 7
    REMOVE_BACKGROUND = 8
    CONTROLNET_TEXT_TO_IMAGE = 9
    CONTROLNET_IMAGE_TO_IMAGE = 10
    CONTROLNET_PREPROCESS = 11


TASK_TYPE_NAMES: Final[Mapping[TaskType, str]] = MappingProxyType(
    {
        TaskType.TEXT_TO_IMAGE: "Text to Image",
        TaskType.IMAGE_TO_IMAGE: "Image to Image",
        TaskType.INPAINTING: "Inpainting",
        TaskType.IMAGE_TO_TEXT: "Image to Text",
        TaskType.PROMPT_ENHANCER: "Prompt Enhancer",
        TaskType.IMAGE_UPSCALE: "Image Upscale",
        TaskType.IMAGE_UPLOAD: "Image Upload",
        TaskType.REMOVE_BACKGROUND: "Remove Background",
        TaskType.CONTROLNET_TEXT_TO_IMAGE: "ControlNet Text to Image",
        TaskType.CONTROLNET_IMAGE_TO_IMAGE: "ControlNet Image to Image",
        TaskType.CONTROLNET_PREPROCESS: "ControlNet preprocess image",
    }
)


# -- models --------------------------------------------------------------------------------


class ModelFamily(StrEnum):
    """Base-model families; ControlNet preprocessors depend on them."""

    SD15 = "sd1.5"
    SDXL = "sdxl"


#: Model ids are strings on the wire (integers from legacy clients compare equal as strings).
MODELS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "4": "SDXL v1.0",
        "13": "rev_animated v1.2.2",
        "18": "absolutereality v1.8.1",
        "19": "cyberrealistic v3.2",
        "20": "dreamshaper v7.0",
        "22": "ghostmix_v2.0 bakedvae",
        "25": "samaritan_3d_cartoon v3.0",
    }
)

MODEL_FAMILIES: Final[Mapping[str, ModelFamily]] = MappingProxyType(
    {mid: ModelFamily.SDXL if mid == "4" else ModelFamily.SD15 for mid in MODELS}
)

DEFAULT_MODEL_ID: Final = "4"

_MODEL_IDS: Final = {name.casefold(): mid for mid, name in MODELS.items()}


def model_name(model_id: str | int) -> str:
    """Return the name of a model id (``13`` and ``"13"`` alike)."""
    return _get(MODELS, str(model_id), "modelId")


def model_id_for(name: str) -> str:
    """Return the model id of a model name (case-insensitive)."""
    return _get(_MODEL_IDS, name.casefold(), "model name")


def model_family(model_id: str | int) -> ModelFamily | None:
    """Return the family of a known model id, or ``None`` (an AIR id, say) if unknown."""
    return MODEL_FAMILIES.get(str(model_id))


# -- schedulers and styles -----------------------------------------------------------------

SCHEDULERS: Final[Mapping[int, str]] = MappingProxyType(
    {
        1: "Default",
        2: "DDIMScheduler",
        3: "DDIMInverseScheduler",
        4: "DDPMScheduler",
        5: "DEISMultistepScheduler",
        6: "DPMSolverSinglestepScheduler",
        7: "DPMSolverMultistepScheduler",
        8: "HeunDiscreteScheduler",
        9: "KDPM2DiscreteScheduler",
        10: "KDPM2AncestralDiscreteScheduler",
        11: "KarrasVeScheduler",
        12: "LMSDiscreteScheduler",
        13: "PNDMScheduler",
        14: "ScoreSdeVeScheduler",
        15: "IPNDMScheduler",
        16: "ScoreSdeVpScheduler",
        17: "EulerDiscreteScheduler",
        18: "EulerAncestralDiscreteScheduler",
        19: "VQDiffusionScheduler",
        20: "UniPCMultistepScheduler",
        21: "RePaintScheduler",
        22: "DPM++ 2M Karras",
        23: "DPM++ 2M SDE Karras",
        24: "DPM++ 2M SDE",
        25: "DPM++ SDE Karras",
        26: "DPM++ SDE",
    }
)

STYLES: Final[Mapping[int, str]] = MappingProxyType(
    {
        1: "No style",
        2: "Anime",
        3: "Photographic",
        4: "Digital Art",
        5: "Comic Book",
        6: "Fantasy Art",
        7: "Analog Film",
        8: "Neon Punk",
        9: "Isometric",
        10: "Low Poly",
        11: "Origami",
        12: "Line Art",
    }
)

_SCHEDULER_IDS: Final = {name.casefold(): i for i, name in SCHEDULERS.items()}
_STYLE_IDS: Final = {name.casefold(): i for i, name in STYLES.items()}


def scheduler_name(scheduler_id: int) -> str:
    """Return the name of a scheduler id."""
    return _get(SCHEDULERS, scheduler_id, "schedulerId")


def scheduler_id_for(name: str) -> int:
    """Return the id of a scheduler name (case-insensitive)."""
    return _get(_SCHEDULER_IDS, name.casefold(), "scheduler name")


def style_name(style_id: int) -> str:
    """Return the name of a style id."""
    return _get(STYLES, style_id, "styleId")


def style_id_for(name: str) -> int:
    """Return the id of a style name (case-insensitive)."""
    return _get(_STYLE_IDS, name.casefold(), "style name")


# -- ControlNet ----------------------------------------------------------------------------

_SDXL_PREPROCESSORS: Final = (
    "canny",
    "depth_leres",
    "depth_midas",
    "depth_zoe",
    "inpaint_global_harmonious",
)

CONTROLNET_PREPROCESSORS: Final[Mapping[ModelFamily, tuple[str, ...]]] = MappingProxyType(
    {
        ModelFamily.SD15: (
            *_SDXL_PREPROCESSORS,
            "lineart_anime",
            "lineart_coarse",
            "lineart_realistic",
            "lineart_standard",
            "mlsd",
            "normal_bae",
            "openpose",
            "openpose_face",
            "openpose_faceonly",
            "openpose_full",
            "openpose_hand",
            "scribble_hed",
            "scribble_pidinet",
            "seg_ofade20k",
            "seg_ofcoco",
            "seg_ufade20k",
            "shuffle",
            "softedge_hed",
            "softedge_hedsafe",
            "softedge_pidinet",
            "softedge_pidisafe",
            "tile_gaussian",
        ),
        ModelFamily.SDXL: _SDXL_PREPROCESSORS,
    }
)

#: ControlNet ``controlMode`` values.
CONTROL_MODES: Final = ("balanced", "prompt", "controlnet")


def preprocessors_for(model_id: str | int) -> tuple[str, ...]:
    """Return the preprocessors valid for a model; unknown models (AIR ids) get the SD 1.5 set,
    the largest, since their family cannot be known here."""
    family = model_family(model_id) or ModelFamily.SD15
    return CONTROLNET_PREPROCESSORS[family]


# -- languages -----------------------------------------------------------------------------

LANGUAGES: Final[Mapping[int, str]] = MappingProxyType(
    {
        1: "English (GB)",
        2: "Afar",
        3: "Abkhazian",
        4: "Afrikaans",
        5: "Amharic",
        6: "Arabic",
        7: "Assamese",
        8: "Aymara",
        9: "Azerbaijani",
        10: "Bashkir",
        11: "Belarusian",
        12: "Bulgarian",
        13: "Bihari",
        14: "Bislama",
        15: "Bengali/Bangla",
        16: "Tibetan",
        17: "Breton",
        18: "Catalan",
        19: "Corsican",
        20: "Czech",
        21: "Welsh",
        22: "Danish",
        23: "German",
        24: "Bhutani",
        25: "Greek",
        26: "Esperanto",
        27: "Spanish",
        28: "Estonian",
        29: "Basque",
        30: "Persian",
        31: "Finnish",
        32: "Fiji",
        33: "Faeroese",
        34: "French",
        35: "Frisian",
        36: "Irish",
        37: "Scots/Gaelic",
        38: "Galician",
        39: "Guarani",
        40: "Gujarati",
        41: "Hausa",
        42: "Hindi",
        43: "Croatian",
        44: "Hungarian",
        45: "Armenian",
        46: "Interlingua",
        47: "Interlingue",
        48: "Inupiak",
        49: "Indonesian",
        50: "Icelandic",
        51: "Italian",
        52: "Hebrew",
        53: "Japanese",
        54: "Yiddish",
        55: "Javanese",
        56: "Georgian",
        57: "Kazakh",
        58: "Greenlandic",
        59: "Cambodian",
        60: "Kannada",
        61: "Korean",
        62: "Kashmiri",
        63: "Kurdish",
        64: "Kirghiz",
        65: "Latin",
        66: "Lingala",
        67: "Laothian",
        68: "Lithuanian",
        69: "Latvian/Lettish",
        70: "Malagasy",
        71: "Maori",
        72: "Macedonian",
        73: "Malayalam",
        74: "Mongolian",
        75: "Moldavian",
        76: "Marathi",
        77: "Malay",
        78: "Maltese",
        79: "Burmese",
        80: "Nauru",
        81: "Nepali",
        82: "Dutch",
        83: "Norwegian",
        84: "Occitan",
        85: "(Afan)/Oromoor/Oriya",
        86: "Punjabi",
        87: "Polish",
        88: "Pashto/Pushto",
        89: "Portuguese",
        90: "Quechua",
        91: "Rhaeto-Romance",
        92: "Kirundi",
        93: "Romanian",
        94: "Russian",
        95: "Kinyarwanda",
        96: "Sanskrit",
        97: "Sindhi",
        98: "Sangro",
        99: "Serbo-Croatian",
        100: "Singhalese",
        101: "Slovak",
        102: "Slovenian",
        103: "Samoan",
        104: "Shona",
        105: "Somali",
        106: "Albanian",
        107: "Serbian",
        108: "Siswati",
        109: "Sesotho",
        110: "Sundanese",
        111: "Swedish",
        112: "Swahili",
        113: "Tamil",
        114: "Telugu",
        115: "Tajik",
        116: "Thai",
        117: "Tigrinya",
        118: "Turkmen",
        119: "Tagalog",
        120: "Setswana",
        121: "Tonga",
        122: "Turkish",
        123: "Tsonga",
        124: "Tatar",
        125: "Twi",
        126: "Ukrainian",
        127: "Urdu",
        128: "Uzbek",
        129: "Vietnamese",
        130: "Volapuk",
        131: "Wolof",
        132: "Xhosa",
        133: "Yoruba",
        134: "Chinese",
        135: "Zulu",
        136: "Akan",
        137: "Arabic (AE)",
        138: "Arabic (BH)",
        139: "Arabic (DZ)",
        140: "Arabic (EG)",
        141: "Arabic (IQ)",
        142: "Arabic (JO)",
        143: "Arabic (KW)",
        144: "Arabic (LB)",
        145: "Arabic (LY)",
        146: "Arabic (MA)",
        147: "Arabic (OM)",
        148: "Arabic (QA)",
        149: "Arabic (SA)",
        150: "Arabic (SY)",
        151: "Arabic (TN)",
        152: "Arabic (YE)",
        153: "Aragonese",
        154: "Asturian",
        155: "Avaric",
        156: "Avestan",
        157: "Azerbaijani (Cyrillic)",
        158: "Bambara",
        159: "Bengali",
        160: "Bihari languages",
        161: "Bosnian",
        162: "Chamorro",
        163: "Chechen",
        164: "Chichewa",
        165: "Chinese (HK)",
        166: "Chinese (MO)",
        167: "Chinese (SG)",
        168: "Chinese (simplified)",
        169: "Chinese (traditional)",
        170: "Chinese (TW)",
        171: "Church Slavic",
        172: "Chuvash",
        173: "Cornish",
        174: "Cree",
        175: "Dari",
        176: "Divehi",
        177: "Dzongkha",
        178: "English (AU)",
        179: "English (BZ)",
        180: "English (CA)",
        181: "English (GH)",
        182: "English (HK)",
        183: "English (IE)",
        184: "English (IN)",
        185: "English (JM)",
        186: "English (KE)",
        187: "English (MU)",
        188: "English (NG)",
        189: "English (NZ)",
        190: "English (PH)",
        191: "English (SG)",
        192: "English (TT)",
        194: "English (US)",
        195: "English (ZA)",
        196: "English (ZW)",
        197: "Ewe",
        198: "Faroese",
        199: "Fijian",
        200: "Filipino",
        201: "Flemish",
        202: "French (BE)",
        203: "French (CA)",
        204: "French (CH)",
        205: "French (LU)",
        206: "French (MC)",
        207: "Fulah",
        208: "Ganda",
        209: "German (AT)",
        210: "German (BE)",
        211: "German (CH)",
        212: "German (LI)",
        213: "German (LU)",
        214: "Haitian Creole",
        215: "Herero",
        216: "Hiri Motu",
        217: "Ido",
        218: "Igbo",
        219: "Inuktitut",
        220: "Inupiaq",
        221: "Italian (CH)",
        222: "Jamaican Patois",
        223: "Kabyle",
        224: "Kalaallisut",
        225: "Kanuri",
        226: "Khmer",
        227: "Kikuyu; Gikuyu",
        228: "Komi",
        229: "Kongo",
        230: "Kuanyama; Kwanyama",
        231: "Lao",
        232: "Latvian",
        233: "Limburgish",
        234: "Lojban",
        235: "Luba-Katanga",
        236: "Luxembourgish",
        237: "Malay (BN)",
        238: "Manx",
        239: "Marshallese",
        240: "Moldavian; Moldovan",
        241: "Montenegrin",
        242: "Montenegrin (Cyrillic)",
        243: "Navajo; Navaho",
        244: "Ndonga",
        245: "North Ndebele",
        246: "Northern Sami",
        247: "Norwegian Bokmål",
        248: "Norwegian Nynorsk",
        249: "Ojibwa",
        250: "Oriya",
        251: "Oromo",
        252: "Ossetian; Ossetic",
        253: "Pali",
        254: "Panjabi; Punjabi",
        255: "Portuguese (BR)",
        256: "Pushto; Pashto",
        257: "Romani",
        258: "Romansh",
        259: "Rundi",
        260: "Rusyn",
        261: "Sango",
        262: "Sardinian",
        263: "Scottish Gaelic",
        264: "Serbian (Cyrillic)",
        265: "Sichuan Yi",
        266: "Sicilian",
        267: "Sinhalese",
        268: "Sotho",
        269: "South Ndebele",
        270: "Spanish (AR)",
        271: "Spanish (BO)",
        272: "Spanish (CL)",
        273: "Spanish (CO)",
        274: "Spanish (CR)",
        275: "Spanish (DO)",
        276: "Spanish (EC)",
        277: "Spanish (GT)",
        278: "Spanish (HN)",
        279: "Spanish (LA & C)",
        280: "Spanish (MX)",
        281: "Spanish (NI)",
        282: "Spanish (PA)",
        283: "Spanish (PE)",
        284: "Spanish (PR)",
        285: "Spanish (PY)",
        286: "Spanish (SV)",
        287: "Spanish (UY)",
        288: "Spanish (VE)",
        289: "Swati",
        290: "Swedish (FI)",
        291: "Tahitian",
        292: "Tswana",
        293: "Uighur",
        294: "Uzbek (Cyrillic)",
        295: "Venda",
        296: "Walloon",
        297: "Western Frisian",
        298: "Zhuang; Chuang",
    }
)

_LANGUAGE_IDS: Final = {name.casefold(): i for i, name in LANGUAGES.items()}


def language_name(language_id: int) -> str:
    """Return the name of a ``promptLanguageId``."""
    return _get(LANGUAGES, language_id, "promptLanguageId")


def language_id_for(name: str) -> int:
    """Return the id of a language name (case-insensitive), e.g. ``"English (US)"``."""
    return _get(_LANGUAGE_IDS, name.casefold(), "language name")


# -- errors --------------------------------------------------------------------------------


class ErrorId(IntEnum):
    """``errorId`` values: the seed's 19, and this project's (1001 and up)."""

    INVALID_API_KEY = 19
    VALIDATION_ERROR = 1001
    UNKNOWN_TASK_TYPE = 1002
    QUEUE_FULL = 1003
    TASK_TIMEOUT = 1004
    INTERNAL_ERROR = 1005
    UPLOAD_FAILED = 1006
    IMAGE_NOT_FOUND = 1007
    MALFORMED_FRAME = 1008
    UNKNOWN_MESSAGE = 1009
    TASK_CANCELLED = 1010
    LIMIT_EXCEEDED = 1011
    SERVER_SHUTTING_DOWN = 1012
    SESSION_REFUSED = 1013
    NOT_AUTHENTICATED = 1014


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What an ``errorId`` means: its stable ``errorCode`` (the ``taskErrors`` extension),
    a description, and whether the client should retry the task after a backoff."""

    code: str
    description: str
    retryable: bool = False


ERRORS: Final[Mapping[int, ErrorInfo]] = MappingProxyType(
    {
        ErrorId.INVALID_API_KEY: ErrorInfo("invalidApiKey", "the API key is missing or invalid"),
        ErrorId.VALIDATION_ERROR: ErrorInfo(
            "validationError", "a field of the task breaks a rule; the message names it"
        ),
        ErrorId.UNKNOWN_TASK_TYPE: ErrorInfo(
            "unknownTaskType", "the taskType is not one this server runs"
        ),
        ErrorId.QUEUE_FULL: ErrorInfo(
            "queueFull", "the server's queue is full; retry after a backoff", retryable=True
        ),
        ErrorId.TASK_TIMEOUT: ErrorInfo("taskTimeout", "the task ran past its time limit"),
        ErrorId.INTERNAL_ERROR: ErrorInfo("internalError", "the server failed to run the task"),
        ErrorId.UPLOAD_FAILED: ErrorInfo(
            "uploadFailed", "pushing the image to uploadEndpoint failed after retries"
        ),
        ErrorId.IMAGE_NOT_FOUND: ErrorInfo(
            "imageNotFound", "an imageUUID the task refers to is unknown or expired"
        ),
        ErrorId.MALFORMED_FRAME: ErrorInfo(
            "malformedFrame", "the frame is not a JSON object of a known shape"
        ),
        ErrorId.UNKNOWN_MESSAGE: ErrorInfo("unknownMessage", "the frame's message type is unknown"),
        ErrorId.TASK_CANCELLED: ErrorInfo("taskCancelled", "the task was cancelled"),
        ErrorId.LIMIT_EXCEEDED: ErrorInfo(
            "limitExceeded", "the task exceeds a server limit (prompt length, numberResults)"
        ),
        ErrorId.SERVER_SHUTTING_DOWN: ErrorInfo(
            "serverShuttingDown", "the server is stopping; retry elsewhere", retryable=True
        ),
        ErrorId.SESSION_REFUSED: ErrorInfo(
            "sessionRefused", "the session to resume belongs to another API key"
        ),
        ErrorId.NOT_AUTHENTICATED: ErrorInfo(
            "notAuthenticated", "a frame arrived before newConnection was accepted"
        ),
    }
)


def error_code_for(error_id: int) -> str | None:
    """Return the stable ``errorCode`` of an ``errorId``, or ``None`` if the id is unknown."""
    info = ERRORS.get(error_id)
    return info.code if info is not None else None


def is_retryable(error_id: int) -> bool:
    """Return whether a task that failed with ``error_id`` should be retried after a backoff."""
    info = ERRORS.get(error_id)
    return info is not None and info.retryable


def _get(table: Mapping[K, V], key: K, what: str) -> V:
    try:
        return table[key]
    except KeyError:
        raise LookupError(f"unknown {what}: {key!r}") from None
