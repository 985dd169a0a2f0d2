/* Caption sources: formats, normalization, error messages, a mutation fuzz
 * loop over every parser, and the subset builder's deterministic paths. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/fsutil.h"
#include "text/captions.h"

static qs_caption_source source(const char *path, size_t limit) {
  return (qs_caption_source){.path = path, .format = QS_CAPTIONS_AUTO, .limit = limit};
}

static bool parse(const qs_caption_source *src, const char *text, qs_sample_list *out, qs_error *err) {
  return qs_captions_parse(src, text, strlen(text), out, err);
}

static void check_texts(const qs_sample_list *list, const char *const *expected, size_t n) {
  CHECK_INT(list->count, n);
  for (size_t i = 0; i < n && i < list->count; i++) CHECK_STR(list->items[i].text, expected[i]);
}

static void check_error_n(const qs_caption_source *src, const char *text, size_t len, const char *expected) {
  qs_sample_list list;
  qs_error err = {0};
  CHECK(!qs_captions_parse(src, text, len, &list, &err));
  CHECK_STR(err.msg, expected);
  CHECK(list.count == 0 && list.items == NULL);
}

static void check_error(const qs_caption_source *src, const char *text, const char *expected) {
  check_error_n(src, text, strlen(text), expected);
}

/* str.splitlines() boundaries (\r\n, \r, \v, U+2028) and str.strip()
 * (U+3000, U+00A0 are whitespace; é is not). */
static void test_txt(void) {
  const char *text =
      "  first caption \r\nsecond\n\n \t \nthird\xe2\x80\xa8"
      "fourth\x0b\xe3\x80\x80 caf\xc3\xa9 \xc2\xa0\rlast";
  const char *all[] = {"first caption", "second", "third", "fourth", "caf\xc3\xa9", "last"};
  qs_caption_source src = source("c.txt", 0);
  qs_sample_list list;
  qs_error err = {0};
  CHECK(parse(&src, text, &list, &err));
  check_texts(&list, all, 6);
  CHECK(!list.pretokenized && list.items[0].ids == NULL);
  qs_sample_list_free(&list);

  src.limit = 2;
  CHECK(parse(&src, text, &list, &err));
  check_texts(&list, all, 2);
  qs_sample_list_free(&list);

  src.limit = 7;
  check_error(&src, text, "c.txt: holds 6 samples, 7 requested");
  src.limit = 0;
  check_error(&src, "ok\nok\n\xff bad\n", "c.txt:3: invalid UTF-8 (byte offset 6)");
  check_error(&src, "\xed\xa0\x80\n", "c.txt:1: invalid UTF-8 (byte offset 0)"); /* a surrogate */
  check_error_n(&src, "a\nb\0c\n", 6, "c.txt:2: NUL byte in a caption (byte offset 3)");
  check_error(&src, "\n \n\t\n", "c.txt: no samples (every line is empty)");
}

static void test_jsonl(void) {
  qs_caption_source src = source("d.jsonl", 0);
  qs_sample_list list;
  qs_error err = {0};
  const char *texts[] = {"a b", "c"};
  CHECK(parse(&src, "{\"text\": \" a b \"}\n\n{\"text\": \"c\", \"id\": 3}\n", &list, &err));
  check_texts(&list, texts, 2);
  qs_sample_list_free(&list);

  src.text_key = "caption";
  CHECK(parse(&src, "{\"caption\": \"c\"}\r\n", &list, &err));
  check_texts(&list, texts + 1, 1);
  qs_sample_list_free(&list);
  check_error(&src, "{\"text\": \"c\"}", "d.jsonl:1: no \"caption\" string and no \"input_ids\" array");
  src.text_key = NULL;

  CHECK(parse(&src, "{\"input_ids\": [1, 2, 151643]}\n{\"input_ids\": [4], \"text\": \"ignored\"}\n", &list, &err));
  CHECK(list.pretokenized);
  CHECK_INT(list.count, 2);
  CHECK_INT(list.items[0].n_ids, 3);
  CHECK_INT(list.items[0].ids[2], 151643);
  CHECK_INT(list.items[1].ids[0], 4);
  CHECK(list.items[1].text == NULL);
  CHECK(qs_sample_list_check_ids(&list, 151936, &err));
  CHECK(!qs_sample_list_check_ids(&list, 1000, &err));
  CHECK_STR(err.msg, "sample 0: token id 151643 at position 2 is outside the vocabulary (size 1000)");
  qs_sample_list_free(&list);

  check_error(&src, "{\"text\": \"a\"}\n{\"input_ids\": [1]}\n",
              "d.jsonl:2: has input_ids but line 1 has text; a file holds one kind of sample");
  check_error(&src, "{\"input_ids\": [1, -2]}\n",
              "d.jsonl:1: input_ids[1] is not a token id (an integer 0..2147483647)");
  check_error(&src, "{\"input_ids\": []}\n", "d.jsonl:1: \"input_ids\" must be a non-empty array of token ids");
  check_error(&src, "[1, 2]\n", "d.jsonl:1: expected a JSON object");
  check_error(&src, "{\"text\": \"a\"}\n{\"text\": \"b\",}\n",
              "d.jsonl:2:14: invalid JSON: string or '}' expected near '}'");
}

static const char coco_doc[] =
    "{\"images\": [{\"id\": 1}, {\"id\": 2}], \"annotations\": ["
    "{\"image_id\": 1, \"id\": 5, \"caption\": \"A dog.\\n\"},"
    "{\"image_id\": 3, \"id\": 6, \"caption\": \"no image entry: skipped\"},"
    "{\"image_id\": 2, \"id\": 7, \"caption\": \" \\n \"},"
    "{\"image_id\": 2, \"id\": 8, \"caption\": \"line\\nbreak \\u00e9 \"}]}";

static void test_coco(void) {
  qs_caption_source src = source("captions.json", 0);
  qs_sample_list list;
  qs_error err = {0};
  const char *texts[] = {"A dog.", "line break \xc3\xa9"};
  CHECK(parse(&src, coco_doc, &list, &err));
  check_texts(&list, texts, 2);
  qs_sample_list_free(&list);

  check_error(&src,
              "{\"annotations\": [{\"image_id\": 1, \"id\": 2, \"caption\": \"x\"}, {\"image_id\": 1, \"id\": 3}]}",
              "captions.json: annotations[1]: \"caption\" is missing or not a string");
  check_error(&src, "{\"annotations\": [{\"image_id\": \"1\", \"id\": 2, \"caption\": \"x\"}]}",
              "captions.json: annotations[0]: \"image_id\" is missing or not an integer");
  check_error(&src, "{\"images\": [{\"file_name\": \"a.jpg\"}], \"annotations\": []}",
              "captions.json: images[0]: \"id\" is missing or not an integer");
  check_error(&src, "{\"info\": {}}", "captions.json: no \"annotations\" array (not a COCO captions file)");
  check_error(&src, "{\"annotations\": [\n1,\n", "captions.json:3:0: invalid JSON: ']' expected near end of file");

  qs_caption_source bad = source("captions.csv", 0);
  check_error(&bad, "a,b", "captions.csv: unknown caption file type (expected .txt, .jsonl or COCO .json)");
}

static void test_strip(void) {
  size_t b, e;
  const char *s = "\xe3\x80\x80\x1c x\xc2\xa0y \xe2\x80\xaf\n";
  qs_py_strip(s, strlen(s), &b, &e);
  CHECK_INT(b, 5);
  CHECK_INT(e, 9);
  qs_py_strip("   ", 3, &b, &e);
  CHECK_INT(e - b, 0);
}

/* Deterministic mutations (byte flips, insertions of syntax characters,
 * deletions, truncation) of valid documents: every parse either succeeds with
 * well-formed samples or fails with a message naming the file. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t next_rand(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}

static size_t mutate(char *buf, size_t len, size_t cap) {
  static const char syntax[] = "{}[]\",:\\\n\r 0-e\x80\xff\xc3";
  for (int m = 0, n = 1 + (int)(next_rand() % 4); m < n && len > 0; m++) {
    size_t at = next_rand() % len;
    switch (next_rand() % 4) {
      case 0: buf[at] = (char)(next_rand() & 0xff); break;
      case 1:
        if (len + 1 < cap) {
          memmove(buf + at + 1, buf + at, len - at);
          buf[at] = syntax[next_rand() % (sizeof syntax - 1)];
          len++;
        }
        break;
      case 2:
        memmove(buf + at, buf + at + 1, len - at - 1);
        len--;
        break;
      default: len = at;
    }
  }
  return len;
}

static void fuzz(const char *path, const char *doc, size_t limit) {
  char buf[1024];
  int ok_count = 0, fail_count = 0;
  for (int iter = 0; iter < 3000; iter++) {
    size_t len = strlen(doc);
    memcpy(buf, doc, len);
    len = mutate(buf, len, sizeof buf);
    qs_caption_source src = source(path, limit);
    qs_sample_list list;
    qs_error err = {0};
    if (qs_captions_parse(&src, buf, len, &list, &err)) {
      ok_count++;
      bool well_formed = list.count > 0;
      for (size_t i = 0; i < list.count; i++)
        well_formed = well_formed && (list.items[i].text ? strlen(list.items[i].text) > 0 : list.items[i].n_ids > 0);
      CHECK(well_formed);
    } else {
      fail_count++;
      CHECK(strncmp(err.msg, path, strlen(path)) == 0 && strlen(err.msg) > strlen(path) + 2);
    }
    qs_sample_list_free(&list);
  }
  /* The loop must exercise both outcomes to mean anything; most mutations of
   * a JSON document break it, so only a few dozen of them stay valid. */
  printf("%s: %d parsed, %d rejected\n", path, ok_count, fail_count);
  CHECK(ok_count >= 30);
  CHECK(fail_count >= 30);
}

static void test_fuzz(void) {
  fuzz("f.txt", "A man riding a wave.\nTwo caf\xc3\xa9 tables\r\n\n  a dog \xe2\x80\xa8 a cat\n", 0);
  fuzz("f.jsonl", "{\"text\": \"a red bus\"}\n{\"text\": \"two \\\"cats\\\"\"}\n\n{\"text\": \"x\"}\n", 0);
  fuzz("g.jsonl", "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [40, 5]}\n", 0);
  fuzz("f.json", coco_doc, 1);
}

/* ---- subset builder: the paths that need no random draw ---- */

static char *write_temp(const char *dir, const char *name, const char *text) {
  char *path = qs_path_join(dir, name);
  qs_error err = {0};
  CHECK(qs_write_file_atomic(path, text, strlen(text), &err));
  return path;
}

static void check_file(const char *dir, const char *name, const char *expected) {
  char *path = qs_path_join(dir, name), *data = NULL;
  size_t len;
  qs_error err = {0};
  CHECK(qs_read_file(path, &data, &len, &err));
  CHECK_STR(data, expected);
  free(data);
  free(path);
}

static void test_build_subset(void) {
  char dir_template[] = "/tmp/qsens-captions-XXXXXX";
  char *dir = mkdtemp(dir_template);
  CHECK(dir != NULL);
  if (!dir) return;
  char *train = write_temp(dir, "train.json", coco_doc);
  char *val =
      write_temp(dir, "val.json", "{\"annotations\": [{\"image_id\": 9, \"id\": 1, \"caption\": \"Val one\"}]}");
  const char *files[] = {train, val};
  qs_subset_size sizes[] = {{"one", 1}, {"three", 3}};
  char *out = qs_path_join(dir, "out");
  /* k >= n keeps all four captions in file order, the empty one included
   * (the original builder writes it as an empty line). */
  qs_subset_opts o = {.annotation_files = files,
                      .n_annotation_files = 2,
                      .out_dir = out,
                      .seed = 42,
                      .k = 4096,
                      .sizes = sizes,
                      .n_sizes = 2};
  qs_subset_summary summary;
  qs_error err = {0};
  CHECK(qs_captions_build_subset(&o, &summary, &err));
  CHECK_INT(summary.n_captions, 4);
  CHECK_INT(summary.n_selected, 4);
  CHECK_INT(summary.n_published_known, 1); /* coco2017_captions.txt; "one"/"three" are not published names */
  CHECK_INT(summary.n_published_match, 0);
  check_file(out, "coco2017_captions.txt", "A dog.\n\nline break \xc3\xa9\nVal one\n");
  check_file(out, "coco2017_captions_one.txt", "A dog.\n");
  check_file(out, "coco2017_captions_three.txt", "A dog.\n\nline break \xc3\xa9\n");

  sizes[1].count = 5;
  CHECK(!qs_captions_build_subset(&o, &summary, &err));
  CHECK_STR(err.msg, "size three=5 is larger than the subset (4 captions)");
  CHECK_INT(err.status, QS_EXIT_USAGE);

  files[1] = "/nonexistent/val.json";
  CHECK(!qs_captions_build_subset(&o, &summary, &err));
  CHECK(strstr(err.msg, "/nonexistent/val.json") != NULL);
  free(train);
  free(val);
  free(out);
}

/* RFC 1321 appendix A.5 test suite. */
static void test_md5(void) {
  static const char *const cases[][2] = {
      {"", "d41d8cd98f00b204e9800998ecf8427e"},
      {"abc", "900150983cd24fb0d6963f7d28e17f72"},
      {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
      {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
      {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"},
      {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
       "57edf4a22be3c955ac49da2e2107b67a"},
  };
  char hex[33];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    qs_md5_hex(cases[i][0], strlen(cases[i][0]), hex);
    CHECK_STR(hex, cases[i][1]);
  }
  bool matches = true;
  CHECK(qs_captions_published_check("coco2017_captions_small.txt", "x\n", 2, &matches));
  CHECK(!matches);
  CHECK(!qs_captions_published_check("demo_captions.txt", "x\n", 2, &matches));
}

/* The committed demo captions load as a .txt source: all 1,200 lines. */
static void test_demo_captions(void) {
  qs_caption_source src = source(QSENS_SOURCE_DIR "/datasets/demo_captions.txt", 0);
  qs_sample_list list;
  qs_error err = {0};
  CHECK(qs_captions_load(&src, &list, &err));
  CHECK_INT(list.count, 1200);
  if (list.count == 1200) {
    CHECK_STR(list.items[0].text,
              "A slice of chocolate cake on a picnic blanket next to a bowl of ramen and a blue napkin.");
    CHECK_STR(list.items[1199].text, "A city bus with the number 76 on its sign stopping on a wooden pier.");
  }
  qs_sample_list_free(&list);
  src.path = "/nonexistent/captions.txt";
  CHECK(!qs_captions_load(&src, &list, &err));
  CHECK(strstr(err.msg, "/nonexistent/captions.txt") != NULL);
}

int main(void) {
  test_txt();
  test_jsonl();
  test_coco();
  test_strip();
  test_fuzz();
  test_build_subset();
  test_demo_captions();
  test_md5();
  return check_summary("test_captions");
}
