"""KFP wrapper for ``deploy_model``."""

from kfp import dsl

from components.common.settings import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy_model(config_json: str, model_json: str) -> str:
    """Serve models:/<name>@champion with BentoML and wait until it answers.

    Args:
        config_json: The resolved mlcycle settings as JSON; serving.* sets host and port.
        model_json: register_model's result; the champion's URI is served.

    Returns:
        The endpoint URL, or an empty string when serving is disabled.
    """
    import json

    from components.common.errors import reported
    from components.common.settings import Settings
    from components.serving.deploy import start_endpoint

    settings = Settings.from_json(config_json)
    if not settings.serving.enabled:
        return ""
    with reported():
        endpoint = start_endpoint(settings, json.loads(model_json)["uri"])
    return endpoint.url
