# A stub of nixpkgs' `lib` with just what nix/module.nix and nix/package.nix use, so that
# vm-tests/tests/packaging.rs can evaluate them with a bare `nix-instantiate` (no nixpkgs, no
# network, no daemon). The functions behave like nixpkgs' for the arguments those files pass.
#
# Not nixpkgs: option types only check values (deeply, where nixpkgs checks lists and
# attribute sets shallowly and their elements when merging); there are no priorities
# (mkDefault, mkForce) and no real module system. `lib.stub.evalModule` is this file's own
# small stand-in for one: option defaults under the values given, mkIf/mkMerge discharged,
# definitions merged (attribute sets recursively, lists concatenated, other values must agree).
let
  inherit (builtins)
    all
    any
    attrNames
    concatLists
    concatStringsSep
    elemAt
    filter
    genList
    isAttrs
    isBool
    isFunction
    isInt
    isList
    isString
    length
    listToAttrs
    mapAttrs
    match
    stringLength
    substring
    ;

  nameValuePair = name: value: { inherit name value; };

  hasPrefix = prefix: str: substring 0 (stringLength prefix) str == prefix;
  hasSuffix =
    suffix: str:
    let
      n = stringLength str;
      k = stringLength suffix;
    in
    n >= k && substring (n - k) k str == suffix;

  regexSpecials = [
    "\\"
    "["
    "{"
    "("
    ")"
    "^"
    "$"
    "?"
    "*"
    "+"
    "|"
    "."
  ];
  escapeRegex = builtins.replaceStrings regexSpecials (map (c: "\\" + c) regexSpecials);

  isDerivation = value: isAttrs value && (value.type or null == "derivation" || value ? outPath);

  # ---- option types: name and a (deep) check -------------------------------------------
  # `fill` (when present) completes a checked value the way the module system would: a
  # submodule's unset options take their defaults, also inside lists.
  mkType = name: check: { inherit name check; };
  fillWith = t: v: if t ? fill then t.fill v else v;
  types = rec {
    bool = mkType "bool" isBool;
    int = mkType "int" isInt;
    ints.unsigned = mkType "ints.unsigned" (v: isInt v && v >= 0);
    str = mkType "str" isString;
    package = mkType "package" isDerivation;
    strMatching = pattern: mkType "strMatching ${pattern}" (v: isString v && match pattern v != null);
    enum = values: mkType "enum" (v: builtins.elem v values);
    nullOr = t: mkType "nullOr ${t.name}" (v: v == null || t.check v) // {
      fill = v: if v == null then null else fillWith t v;
    };
    listOf = t: mkType "listOf ${t.name}" (v: isList v && all t.check v) // { fill = map (fillWith t); };
    attrsOf = t: mkType "attrsOf ${t.name}" (v: isAttrs v && all (n: t.check v.${n}) (attrNames v));
    either = a: b: mkType "either ${a.name} ${b.name}" (v: a.check v || b.check v) // {
      fill = v: if a.check v then fillWith a v else fillWith b v;
    };
    oneOf = ts: mkType "oneOf" (v: any (t: t.check v) ts);
    # Only the attribute-set form ({ options; freeformType; }), which is what the module uses.
    submodule =
      spec:
      let
        opts = spec.options or { };
        free = spec ? freeformType;
      in
      mkType "submodule" (
        v:
        isAttrs v
        && all (n: if opts ? ${n} then opts.${n}.type.check v.${n} else free) (attrNames v)
      )
      // {
        fill =
          v:
          v
          // mapAttrs (
            n: o: if v ? ${n} then fillWith o.type v.${n} else fillWith o.type (o.default or (throw "stub: ${n} has no value and no default"))
          ) opts;
      };
  };

  lib = rec {
    inherit
      types
      nameValuePair
      hasPrefix
      hasSuffix
      concatStringsSep
      listToAttrs
      ;

    # ---- the module-system pieces the module uses ----
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: mkOption {
      type = types.bool;
      default = false;
      description = "Whether to enable ${name}.";
    };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };

    mkPackageOption =
      pkgs: name:
      { extraDescription ? "", ... }:
      mkOption {
        type = types.package;
        default = pkgs.${name};
        description = "The ${name} package to use. ${extraDescription}";
      };
    getExe = package: "${package}/bin/${package.meta.mainProgram}";
    versionAtLeast = a: b: builtins.compareVersions a b >= 0;
    versions.majorMinor =
      v: concatStringsSep "." (lib.imap0 (_: x: x) (builtins.genList (i: elemAt (builtins.splitVersion v) i) 2));
    trivial.release = "26.05";
    recursiveUpdate = stub.recursiveUpdate;

    # ---- lists, strings, attribute sets ----
    optional = cond: value: if cond then [ value ] else [ ];
    optionals = cond: list: if cond then list else [ ];
    optionalAttrs = cond: set: if cond then set else { };
    optionalString = cond: string: if cond then string else "";
    imap0 = f: list: genList (i: f i (elemAt list i)) (length list);
    concatStrings = concatStringsSep "";
    concatMapStrings = f: list: concatStringsSep "" (map f list);
    concatMapStringsSep = sep: f: list: concatStringsSep sep (map f list);
    filterAttrs =
      pred: set:
      listToAttrs (
        concatLists (map (n: if pred n set.${n} then [ (nameValuePair n set.${n}) ] else [ ]) (attrNames set))
      );
    removePrefix =
      prefix: str:
      if hasPrefix prefix str then
        substring (stringLength prefix) (stringLength str - stringLength prefix) str
      else
        str;
    removeSuffix =
      suffix: str:
      if hasSuffix suffix str then substring 0 (stringLength str - stringLength suffix) str else str;
    splitString = sep: str: filter isString (builtins.split (escapeRegex sep) str);

    # ---- what nix/package.nix uses ----
    licenses = {
      mit = {
        spdxId = "MIT";
      };
      asl20 = {
        spdxId = "Apache-2.0";
      };
    };
    # Lazy records: the tests never copy the source into a store.
    cleanSource = src: {
      _type = "stub-source";
      inherit src;
    };
    cleanSourceWith =
      { src, filter }:
      {
        _type = "stub-source";
        inherit src filter;
      };

    # ---- test helpers, not part of nixpkgs' lib ----
    stub = rec {
      absent = {
        _type = "stub-absent";
      };
      isAbsent = v: isAttrs v && v._type or null == "stub-absent";

      # Discharges mkIf/mkMerge in a definition; `absent` when a mkIf is false.
      resolve =
        v:
        if !(isAttrs v) || isDerivation v then
          v
        else if v._type or null == "if" then
          (if v.condition then resolve v.content else absent)
        else if v._type or null == "merge" then
          mergeDefinitions (map resolve v.contents)
        else if v ? _type then
          v
        else
          lib.filterAttrs (_: value: !(isAbsent value)) (mapAttrs (_: resolve) v);

      # Several definitions of one value: attribute sets merged by name, lists concatenated,
      # anything else must be defined once or identically.
      mergeDefinitions =
        defs:
        let
          present = filter (d: !(isAbsent d)) defs;
        in
        if present == [ ] then
          absent
        else if all isList present then
          concatLists present
        else if all (d: isAttrs d && !(isDerivation d) && !(d ? _type)) present then
          mapAttrs (_: mergeDefinitions) (builtins.zipAttrsWith (_: values: values) present)
        else if all (d: d == builtins.head present) present then
          builtins.head present
        else
          throw "stub: conflicting definitions: ${builtins.toJSON present}";

      isOption = v: isAttrs v && v._type or null == "option";

      # Option values: the given value (type-checked) or the declared default. Below the top
      # level, a given name the module does not declare is an error (a typo in a test).
      optionValues =
        path: decls: given:
        let
          unknown = filter (name: !(decls ? ${name})) (attrNames given);
        in
        if path != [ ] && unknown != [ ] then
          throw "stub: ${concatStringsSep "." path} has no option ${concatStringsSep ", " unknown}"
        else
        mapAttrs (
          name: decl:
          let
            where = concatStringsSep "." (path ++ [ name ]);
          in
          if isOption decl then
            (
              if given ? ${name} then
                (
                  if decl.type.check given.${name} then
                    fillWith decl.type given.${name}
                  else
                    throw "stub: ${where} is not of type ${decl.type.name}"
                )
              else
                fillWith decl.type (decl.default or (throw "stub: ${where} has no value and no default"))
            )
          else
            optionValues (path ++ [ name ]) decl (given.${name} or { })
        ) decls;

      # Given values not declared by the module (other modules' options) are kept as is.
      recursiveUpdate =
        lhs: rhs:
        lhs
        // mapAttrs (
          name: r:
          if lhs ? ${name} && isAttrs lhs.${name} && isAttrs r && !(isDerivation r) then
            recursiveUpdate lhs.${name} r
          else
            r
        ) rhs;

      # Evaluates one module. `config` holds the values of its options and of the other
      # options it reads; `options` stands for the other modules' declarations (only tested
      # with `?`); the list options at `feedback` paths (e.g. [ "boot" "kernelParams" ]) read
      # back the given value followed by what the module itself defines there, as the real
      # module system would.
      evalModule =
        {
          module,
          pkgs,
          config ? { },
          options ? { },
          feedback ? [ ],
        }:
        let
          call = module {
            inherit lib pkgs options;
            config = final;
          };
          declared = call.options;
          resolved = resolve call.config;
          defined = mergeDefinitions [
            resolved
            { }
          ];
          fed = builtins.foldl' (
            acc: path:
            recursiveUpdate acc (
              builtins.foldl' (inner: name: { ${name} = inner; }) (
                attrByPath path [ ] config ++ attrByPath path [ ] defined
              ) (reverse path)
            )
          ) { } feedback;
          final = recursiveUpdate (recursiveUpdate config fed) (optionValues [ ] declared config);
        in
        {
          inherit declared final;
          config = defined;
        };

      attrByPath =
        path: default: set:
        if path == [ ] then
          set
        else if isAttrs set && set ? ${builtins.head path} then
          attrByPath (builtins.tail path) default set.${builtins.head path}
        else
          default;
      reverse = list: genList (i: elemAt list (length list - 1 - i)) (length list);
    };
  };
in
lib
