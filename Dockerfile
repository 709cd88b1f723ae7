# One image for every role: `chatbatch worker`, `chatbatch db upgrade`, `chatbatch simulate`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY chatbatch ./chatbatch
COPY worker ./worker
COPY cli ./cli
COPY simulator ./simulator
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --create-home chatbatch
USER chatbatch
ENTRYPOINT ["chatbatch"]
