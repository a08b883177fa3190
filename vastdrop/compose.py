"""The composition root: ControlSettings -> the handlers' Deps. Production and the CLI build deps
here; tests build Deps directly with clients pointed at loopback servers."""

from __future__ import annotations

from pathlib import Path

from handlers.deps import ControlConfig, Deps
from vastdrop import logs
from vastdrop.compute.base import Compute
from vastdrop.errors import ConfigError
from vastdrop.layout import Layout
from vastdrop.ledger import open_ledger
from vastdrop.location import Location
from vastdrop.settings import ControlSettings
from vastdrop.storage.local import file_url_to_path


def control_config(s: ControlSettings) -> ControlConfig:
    return ControlConfig(
        target_fps=s.target_fps, upscale=s.upscale, interpolation_model=s.interpolation_model,
        upscale_model=s.upscale_model, device=s.device, video_codec=s.video_codec, crf=s.crf, compile=s.compile,
        container=s.container,
        max_duration_s=s.max_duration_s, max_output_pixels=s.max_output_pixels,
        single_put_max_bytes=s.single_put_max_bytes, result_part_bytes=s.result_part_bytes,
        max_result_bytes=s.max_result_bytes,
        max_attempts=s.max_attempts, retry_backoff_s=s.retry_backoff_s, job_timeout_s=s.job_timeout_s,
        max_preemptions=s.max_preemptions, segment_s=s.segment_s,
        loading_timeout_s=s.loading_timeout_s, verify_interval_s=s.verify_interval_s,
        callback_url=s.callback_url, event_max_age_s=s.event_max_age_s,
        callback_secret=s.callback_secret.get_secret_value() if s.callback_secret else None,
    )


def build_compute(s: ControlSettings, state_dir: Path) -> Compute:
    if s.compute == "local":
        from vastdrop.compute.local import LocalCompute

        return LocalCompute(state_dir / "instances")
    from vastdrop.compute.vast import VastCompute, VastConfig

    if s.vast_api_key is None:
        raise ConfigError("--compute vast needs WATCHER_VAST_API_KEY")
    config = VastConfig(
        image=s.vast_image, image_login=s.vast_image_login, gpu_names=s.vast_gpu_names,
        min_gpu_ram_gb=s.vast_min_gpu_ram_gb, max_dph=s.vast_max_dph, max_instances=s.vast_max_instances,
        max_total_dph=s.vast_max_total_dph, disk_gb=s.vast_disk_gb, min_inet_down=s.vast_min_inet_down,
        max_bandwidth_per_gb=s.vast_max_bandwidth_per_gb, api_share=s.vast_api_share,
        max_create_wait_s=s.vast_max_create_wait_s, interruptible=s.interruptible, bid_ratio=s.bid_ratio,
    )
    return VastCompute(api_key=s.vast_api_key.get_secret_value(), server_url=s.vast_server_url, config=config)


def refuse_loops(inputs: Location, outputs: Location, layout: Layout) -> None:
    """ConfigError when what the control plane writes would be listed as input: an output prefix inside
    the input prefix (every result a new input), the input inside the output (results of inputs under
    output/input/... land in input/), or the job logs inside the input. Different buckets never overlap."""
    source, target = _extent(inputs, inputs.prefix), _extent(outputs, outputs.prefix)
    if _within(source, target) or _within(target, source):
        raise ConfigError(f"output {outputs.root + outputs.prefix} and input {inputs.root + inputs.prefix} overlap: "
                          "every result would become a new input (use separate prefixes, e.g. input/ and output/)")
    if _within(_extent(outputs, layout.log_prefix), source):
        raise ConfigError(f"job logs {outputs.root + layout.log_prefix} would be inside input "
                          f"{inputs.root + inputs.prefix}: each log would become a new input (use another input prefix)")


def _extent(location: Location, prefix: str) -> tuple[str, str]:
    """(namespace, folder ending in '/'): one bucket's keys, or for file:// the whole filesystem, since
    two different root folders can still nest."""
    if location.is_local:
        return "file", (file_url_to_path(location.root) / prefix).as_posix().rstrip("/") + "/"
    return location.root, prefix


def _within(inner: tuple[str, str], outer: tuple[str, str]) -> bool:
    return inner[0] == outer[0] and inner[1].startswith(outer[1])


def register_secrets(s: ControlSettings) -> None:
    """From now on every log line and error has these values scrubbed."""
    for secret in (s.webhook_secret, s.callback_secret, s.vast_api_key, s.vast_image_login, s.b2_application_key,
                   s.s3_secret_access_key):
        if secret is not None:
            logs.register_secret(secret.get_secret_value())


def build_deps(s: ControlSettings, *, compute: Compute | None = None) -> Deps:
    register_secrets(s)
    session = None
    if (s.s3_access_key_id and s.s3_secret_access_key) or s.s3_region:
        import boto3

        session = boto3.Session(
            aws_access_key_id=s.s3_access_key_id,
            aws_secret_access_key=s.s3_secret_access_key.get_secret_value() if s.s3_secret_access_key else None,
            region_name=s.s3_region)
    inputs, outputs = Location.parse(s.input, s3_session=session), Location.parse(s.output, s3_session=session)
    if inputs.root != outputs.root and (inputs.is_local != outputs.is_local):
        raise ConfigError("input and output must both be file:// or both be s3://")
    if s.compute == "vast" and inputs.is_local:
        raise ConfigError("--compute vast needs s3:// input and output: a rented GPU cannot read ./bucket")
    layout = Layout(input_prefix=inputs.prefix, output_prefix=outputs.prefix)
    refuse_loops(inputs, outputs, layout)
    state_dir = Path(s.state)  # absolute (settings): jobs and a watcher that changed directory agree on it
    state_dir.mkdir(parents=True, exist_ok=True)
    ledger = open_ledger(s.ledger or str(state_dir / "ledger.sqlite"))
    return Deps(inputs=inputs, outputs=outputs, ledger=ledger, compute=compute or build_compute(s, state_dir),
                config=control_config(s))
