"""A starter service for Service Nanny: GET /health and one example endpoint."""
from fastapi import FastAPI
from pydantic import BaseModel


def load_model():
    # Load the model here: weights, tokenizer, .to("cuda"). This one only echoes.
    return lambda text: text


# Loaded at import: uvicorn opens its port only afterwards, so /health fails until the
# model is ready and Service Nanny shows the service as starting meanwhile (for up to
# start_period in service.yaml).
model = load_model()

app = FastAPI(title="my-service")


class PredictRequest(BaseModel):
    input: str


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/predict")
def predict(request: PredictRequest):
    # A plain def: FastAPI runs it in a thread pool, so slow inference does not block
    # /health.
    return {"output": model(request.input)}
