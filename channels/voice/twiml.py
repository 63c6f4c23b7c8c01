"""TwiML: the XML a Twilio-compatible voice provider executes, built from flow turns.

Only the verbs the contact center uses: ``<Say language>``, ``<Play>``, ``<Gather>``
(DTMF and speech), ``<Record>``, ``<Dial>``, ``<Enqueue>``, ``<Leave>``, ``<Redirect>``,
``<Hangup>``. Attribute names are TwiML's camelCase; every URL is absolute.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field

from routing.flows import Gather, Say

_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids."""
    return _XML_ILLEGAL.sub("", text)


@dataclass
class TwiML:
    """A ``<Response>`` document under construction."""

    root: ET.Element = field(default_factory=lambda: ET.Element("Response"))

    def say(self, says: Iterable[Say], parent: ET.Element | None = None) -> TwiML:
        """Speak (or play) each prompt in order."""
        target = self.root if parent is None else parent
        for item in says:
            if item.audio_url:
                ET.SubElement(target, "Play").text = item.audio_url
            if item.text:
                ET.SubElement(target, "Say", language=item.language).text = item.text
        return self

    def gather(self, spec: Gather, action: str, says: Iterable[Say]) -> TwiML:
        """Ask for input (prompts inside ``<Gather>`` so a key press interrupts them)."""
        attributes = {
            "action": action,
            "method": "POST",
            "input": "dtmf speech" if spec.speech else "dtmf",
            "numDigits": str(spec.digits),
            "timeout": str(spec.timeout_seconds),
            "language": spec.language,
            "actionOnEmptyResult": "true",
        }
        if spec.field is not None:
            # a field (order number, phone) is keyed in and ended with #
            attributes["finishOnKey"] = "#"
        if spec.speech and (spec.hints or spec.field is not None or spec.question):
            if spec.hints:
                attributes["hints"] = ", ".join(spec.hints)[:1000]
            attributes["speechTimeout"] = "auto"
        gather = ET.SubElement(self.root, "Gather", attributes)
        self.say(says, gather)
        return self

    def record(self, action: str, *, max_seconds: int, transcribe_callback: str | None) -> TwiML:
        """Record a voicemail after the beep."""
        attributes = {"action": action, "method": "POST", "maxLength": str(max_seconds),
                      "playBeep": "true", "finishOnKey": "#"}
        if transcribe_callback:
            attributes["transcribe"] = "true"
            attributes["transcribeCallback"] = transcribe_callback
        ET.SubElement(self.root, "Record", attributes)
        return self

    def dial(self, target: str, *, action: str, timeout: int = 20, caller_id: str | None = None,
             ) -> TwiML:
        """Put the call through to an agent's number, client or SIP address."""
        attributes = {"action": action, "method": "POST", "timeout": str(timeout)}
        if caller_id:
            attributes["callerId"] = caller_id
        dial = ET.SubElement(self.root, "Dial", attributes)
        if target.startswith("client:"):
            ET.SubElement(dial, "Client").text = target.removeprefix("client:")
        elif target.startswith("sip:"):
            ET.SubElement(dial, "Sip").text = target
        else:
            ET.SubElement(dial, "Number").text = target
        return self

    def enqueue(self, queue: str, *, action: str, wait_url: str) -> TwiML:
        """Hold the caller in a queue; ``wait_url`` says what they hear meanwhile."""
        ET.SubElement(self.root, "Enqueue", {"action": action, "method": "POST",
                                             "waitUrl": wait_url,
                                             "waitUrlMethod": "POST"}).text = queue
        return self

    def play(self, url: str, loop: int = 1) -> TwiML:
        """Play an audio file (hold music)."""
        ET.SubElement(self.root, "Play", loop=str(loop)).text = url
        return self

    def pause(self, seconds: int) -> TwiML:
        """Silence."""
        ET.SubElement(self.root, "Pause", length=str(seconds))
        return self

    def leave(self) -> TwiML:
        """Leave the queue (the Enqueue action URL decides what follows)."""
        ET.SubElement(self.root, "Leave")
        return self

    def redirect(self, url: str) -> TwiML:
        """Continue with the TwiML at ``url``."""
        ET.SubElement(self.root, "Redirect", method="POST").text = url
        return self

    def hangup(self) -> TwiML:
        """End the call."""
        ET.SubElement(self.root, "Hangup")
        return self

    def to_xml(self) -> str:
        """The document, UTF-8 XML with its declaration (characters XML 1.0 cannot hold,
        such as control characters in a caller's name, are dropped: ElementTree would
        write them raw and the provider would reject the whole document)."""
        for element in self.root.iter():
            if element.text:
                element.text = xml_safe(element.text)
            for name, value in element.attrib.items():
                element.attrib[name] = xml_safe(value)
        body = ET.tostring(self.root, encoding="unicode")
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + body
