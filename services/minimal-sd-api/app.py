"""Text to image with a diffusers pipeline: POST /generate returns a PNG as base64.

The model loads in a background thread so that the server answers at once:
GET /health is 503 while it loads and 200 once it can generate.
"""
import base64
import io
import logging
import os
import threading

import torch
from diffusers import AutoPipelineForText2Image
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

MODEL_ID = os.environ.get("MODEL_ID", "stabilityai/sd-turbo")

# Uvicorn's logger, so that these lines look like the server's own.
log = logging.getLogger("uvicorn.error")
pipeline = None
# One generation at a time: a pipeline is not thread-safe, and two would share the GPU.
generate_lock = threading.Lock()


def load_pipeline():
    global pipeline
    try:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device == "cuda" else torch.float32
        pipe = AutoPipelineForText2Image.from_pretrained(MODEL_ID, torch_dtype=dtype)
        pipeline = pipe.to(device)
        log.info("%s loaded on %s", MODEL_ID, device)
    except Exception:
        log.exception("cannot load %s", MODEL_ID)
        # Exit, so the container stops and Service Nanny shows the service failed at once
        # instead of unhealthy until start_period runs out.
        os._exit(1)


threading.Thread(target=load_pipeline, name="load-pipeline", daemon=True).start()

app = FastAPI(title="minimal-sd-api")


class GenerateRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=2000)
    steps: int = Field(default=1, ge=1, le=100)  # SD-Turbo: 1 to 4
    guidance_scale: float = Field(default=0.0, ge=0.0, le=30.0)  # 0 for turbo models
    width: int = Field(default=512, ge=64, le=2048, multiple_of=8)
    height: int = Field(default=512, ge=64, le=2048, multiple_of=8)
    seed: int | None = None


@app.get("/health")
def health():
    if pipeline is None:
        return JSONResponse({"status": "loading", "model": MODEL_ID}, status_code=503)
    return {"status": "ok", "model": MODEL_ID}


@app.post("/generate")
def generate(request: GenerateRequest):
    if pipeline is None:
        raise HTTPException(status_code=503, detail="the model is still loading")
    generator = None
    if request.seed is not None:
        generator = torch.Generator(device=pipeline.device).manual_seed(request.seed)
    with generate_lock:
        image = pipeline(
            prompt=request.prompt,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            width=request.width,
            height=request.height,
            generator=generator,
        ).images[0]
    png = io.BytesIO()
    image.save(png, format="PNG")
    return {"image": base64.b64encode(png.getvalue()).decode("ascii"), "format": "png",
            "model": MODEL_ID, "seed": request.seed}
