import { describe, expect, test } from "bun:test";
import { imageFiles } from "../../image/files.ts";
import { imageHash } from "../../core/image.ts";
import { embedded, renderModule } from "../../scripts/embed.ts";

describe("image sources embedded in the binary", () => {
  for (const entry of embedded) {
    test(`${entry.module} lists exactly the files in ${entry.dir}/ (run \`bun scripts/embed.ts\` when this fails)`, async () => {
      const current = await Bun.file(new URL(`../../${entry.module}`, import.meta.url)).text();
      expect(current).toBe(await renderModule(entry));
    });
  }

  test("the entrypoint and Containerfile are embedded, and the content hash follows content", () => {
    expect(imageFiles["entrypoint.sh"]!.content).toStartWith("#!/bin/sh");
    expect(imageFiles["Containerfile"]!.content).toContain("ENTRYPOINT");
    const changed = { ...imageFiles, "entrypoint.sh": { ...imageFiles["entrypoint.sh"]!, content: "#!/bin/sh\n" } };
    expect(imageHash(changed)).not.toBe(imageHash());
    expect(imageHash()).toMatch(/^[0-9a-f]{16}$/);
  });
});
