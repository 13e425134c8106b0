import type { MqttClient } from '../client.js';

/** [MQTT-5-3.12.4-1] PINGREQ is answered with PINGRESP. */
export function handlePingreq(client: MqttClient): void {
  client.out.writePacket({ cmd: 'pingresp' });
}
