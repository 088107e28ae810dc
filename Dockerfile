# One image for every gateway process (worker, mock endpoint; listener and API with the front door).
FROM python:3.11-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dcmtk \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dicom_io dicom_io
COPY workers workers
COPY service service
COPY config config
RUN pip install --no-cache-dir . && useradd --system --uid 10001 mipgw && mkdir /data && chown mipgw /data
USER mipgw
ENV MIPGW_DATA_DIR=/data
ENTRYPOINT ["mip-gateway"]
