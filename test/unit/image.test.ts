import { describe, expect, test } from "bun:test";
import { imageFiles } from "../../image/files.ts";
import { imageHash } from "../../core/image.ts";
import { renderFilesModule } from "../../scripts/image-files.ts";

describe("image sources embedded in the binary", () => {
  test("image/files.ts lists exactly the files in image/ (run `bun scripts/image-files.ts` when this fails)", async () => {
    const current = await Bun.file(new URL("../../image/files.ts", import.meta.url)).text();
    expect(current).toBe(await renderFilesModule());
  });

  test("the entrypoint and Containerfile are embedded, and the content hash follows content", () => {
    expect(imageFiles["entrypoint.sh"]!.content).toStartWith("#!/bin/sh");
    expect(imageFiles["Containerfile"]!.content).toContain("ENTRYPOINT");
    const changed = { ...imageFiles, "entrypoint.sh": { ...imageFiles["entrypoint.sh"]!, content: "#!/bin/sh\n" } };
    expect(imageHash(changed)).not.toBe(imageHash());
    expect(imageHash()).toMatch(/^[0-9a-f]{16}$/);
  });
});
