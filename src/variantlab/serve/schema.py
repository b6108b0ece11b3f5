"""What `serve` accepts: the request bodies (pydantic, strict), the checks on them, and the error object.

Every string a request hands to the engine is ``Text`` (valid Unicode, no lone surrogates); a
request the server refuses raises ``ApiError``, which becomes an OpenAI-style error object.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _encodable(text: str) -> str:
    """Refuse text that is not Unicode the engine can encode (a lone surrogate such as "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"holds a lone surrogate at character {exc.start}; send valid Unicode text") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]  # every string a request hands to the engine


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class SamplingFields(_Strict):
    """The sampling fields every generation request takes (OpenAI's defaults)."""

    temperature: float = Field(0.8, ge=0, le=5)
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(40, ge=0, le=1000)
    seed: int | None = None
    stream: bool = False
    max_tokens: int | None = None

    def sampling(self) -> dict[str, Any]:
        """What the engine's sampler takes (a fixed seed when none is given: greedy is the same every time)."""
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "seed": self.seed if self.seed is not None else 1234}


class _Sampling(SamplingFields):
    model: str | None = None
    stop: Text | list[Text] | None = None
    n: int = Field(1, ge=1, le=1)


class CompletionRequest(_Sampling):
    prompt: Text | list[Text]
    suffix: Text | None = None  # OpenAI's insert mode, as Ollama takes it: the prompt is the prefix, this the suffix


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: Text


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    stream_options: dict[str, Any] | None = None


class ExtraChunk(_Strict):
    """A neighbouring file (or a piece of one) an editor plugin sends with an infill request."""

    text: Text
    filename: Text = "tmp"


class InfillRequest(SamplingFields):
    """llama-server's /infill shape, as editor plugins send it (greedy unless asked otherwise)."""

    input_prefix: Text
    input_suffix: Text = ""
    input_extra: list[ExtraChunk] = Field(default_factory=list, max_length=256)
    prompt: Text = ""
    n_predict: int | None = None
    temperature: float = Field(0.0, ge=0, le=5)
    stop: list[Text] = Field(default_factory=list)


class ApiError(Exception):
    """A request the server refuses: HTTP status plus the OpenAI error object's fields."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, kind=self.kind, param=self.param, code=self.code)


def error_response(status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def single_prompt(prompts: list[str]) -> str:
    if len(prompts) != 1:
        raise ApiError(400, f"this server takes one prompt per request, not {len(prompts)}", param="prompt")
    return prompts[0]


def check_model(model: str | None, served_id: str, aliases: frozenset[str]) -> None:
    if model is not None and model not in aliases:
        raise ApiError(404, f"the model {model!r} does not exist here; this server serves {served_id!r}",
                       param="model", code="model_not_found")


def max_tokens(wanted: int | None, cap: int) -> int:
    if wanted is None:
        return cap
    if wanted < 1:
        raise ApiError(400, f"max_tokens must be at least 1, not {wanted}", param="max_tokens")
    if wanted > cap:
        raise ApiError(400, f"max_tokens {wanted} exceeds this server's cap of {cap}", param="max_tokens")
    return wanted


def stops(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise ApiError(400, "stop takes up to 4 non-empty strings", param="stop")
    return stops
