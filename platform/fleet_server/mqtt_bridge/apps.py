from django.apps import AppConfig


class MqttBridgeConfig(AppConfig):
    name = "fleet_server.mqtt_bridge"
    label = "mqtt_bridge"
    verbose_name = "MQTT bridge"
