"""The MQTT runtime every node imports: connection settings and the paho client factory
(`client`), the one session class (`session`), the Home Assistant announcer (`homeassistant`)
and their errors. Provisioning a broker (mosquitto, users, certificates) is `broker`'s, which
devices and workers never import."""
