# One image for every gateway process: listener (scp), HTTP API (api), worker, mock endpoint, or all
# of them in one container (serve). dcmtk is there for the listener's healthcheck (/usr/bin/echoscu).
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
EXPOSE 11112 8080
ENTRYPOINT ["mip-gateway"]
