import type { SpreadAnalysis } from '@soundqueue/shared/analysis';
import { ContentAnalysisError } from '@soundqueue/shared/errors';
import type { AnalysisProvider, AnalysisRequest, AnalysisResult } from './types';

// The no-key, no-network analyzer: weighted keyword counts per family. It sees only the
// spread and the one before it (spreads are analysed in parallel), so every rule below is a
// function of that pair; the same text always gets the same label whichever side it is on,
// which is what keeps a scene boundary from being reported twice or not at all.

/**
 * Test hook: a spread whose own text contains this marker fails with a non-retryable
 * ContentAnalysisError, so pipeline tests can fail chosen spreads deterministically with the
 * real provider. It is checked in the current spread only, never in previousText.
 */
export const ANALYSIS_FAILURE_MARKER = '[[analysis-fails]]';

interface Family {
  /** Weight 2: words that name the place itself. */
  strong?: string;
  /** Weight 1: things found there. */
  weak?: string;
  /** Sound words; they name the layers the local soundscape synthesizer knows (rain, ocean, wind, fire, birds, city hum, insects). */
  sounds?: string[];
}

const SETTINGS: Record<string, Family> = {
  forest: {
    strong: 'forest woods woodland grove thicket glade',
    weak: 'tree trees oak pine birch beech fern moss leaves leaf branch branches bough undergrowth clearing bracken trunk canopy deer squirrel woodpecker mushroom roots',
    sounds: ['forest birds', 'wind in leaves', 'rustling undergrowth'],
  },
  sea: {
    strong: 'sea ocean ship deck sail harbour harbor beach shore mast hull boat',
    weak: 'wave waves tide salt spray gull crew captain rigging helm anchor starboard sailor cargo oar dock pier sand seaweed foam keel bosun',
    sounds: ['ocean waves', 'creaking hull', 'gulls', 'wind in the sails'],
  },
  city: {
    strong: 'city street alley avenue boulevard downtown pavement sidewalk traffic',
    weak: 'car taxi bus tram lamppost streetlamp neon apartment building rooftop shop cafe crowd subway skyscraper siren horn',
    sounds: ['city hum', 'distant traffic', 'footsteps on pavement'],
  },
  castle: {
    strong: 'castle fortress throne battlements courtyard drawbridge rampart citadel palace',
    weak: 'tower turret banner knight king queen lord steward hall tapestry portcullis moat chamber guard parapet dungeon crown servant torch',
    sounds: ['echoing stone hall', 'distant footsteps', 'wind against stone'],
  },
  school: {
    strong: 'school classroom teacher lesson homework playground headmaster headmistress',
    weak: 'desk blackboard chalk bell class exam corridor locker student pupil textbook recess principal',
    sounds: ['murmur of students', 'chalk on blackboard', 'footsteps in corridor'],
  },
  tavern: {
    strong: 'tavern inn pub alehouse innkeeper barkeep',
    weak: 'bar ale beer mug tankard bartender patron stool barmaid',
    sounds: ['tavern chatter', 'clinking tankards', 'creaking floorboards'],
  },
  desert: {
    strong: 'desert dune oasis camel caravan',
    weak: 'sand scorpion cactus mirage dust',
    sounds: ['dry desert wind', 'shifting sand'],
  },
  mountains: {
    strong: 'mountain peak summit cliff ridge glacier',
    weak: 'rock slope crag boulder ledge valley scree altitude',
    sounds: ['mountain wind', 'distant rockfall', 'eagle cry'],
  },
  cave: {
    strong: 'cave cavern tunnel grotto underground',
    weak: 'stalactite stalagmite drip dripping echo bat damp',
    sounds: ['water dripping', 'echoing cave', 'low rumble'],
  },
  home: {
    strong: 'kitchen bedroom parlour parlor cottage',
    weak: 'house home table chair sofa couch kettle stove oven cupboard curtains bed pillow stairs',
    sounds: ['ticking clock', 'quiet room tone', 'creaking floorboards'],
  },
  village: {
    strong: 'village hamlet farm farmhouse barn',
    weak: 'field meadow cart chicken hen cow sheep farmer miller mill orchard lane',
    sounds: ['distant farm animals', 'church bell', 'birds'],
  },
  battlefield: {
    strong: 'battle battlefield army soldiers war cannon trench siege',
    weak: 'sword shield spear arrow cavalry troops musket wounded enemy drums regiment ranks',
    sounds: ['distant battle clamour', 'clashing steel', 'war drums'],
  },
  river: {
    strong: 'river lake stream creek riverbank pond waterfall',
    weak: 'reeds ripple bridge ferry rowing canoe',
    sounds: ['flowing water', 'lapping water', 'frogs'],
  },
};

const WEATHER: Record<string, Family> = {
  storm: { strong: 'storm thunder lightning gale tempest squall thunderclap hurricane', sounds: ['rolling thunder', 'howling wind', 'heavy rain'] },
  rain: { strong: 'rain raining rained downpour', weak: 'drizzle raindrops puddles drenched showers', sounds: ['steady rain'] },
  fire: { strong: 'fire fireplace hearth flames embers blaze firelight bonfire campfire', weak: 'logs smoke sparks', sounds: ['crackling fire'] },
  snow: { strong: 'snow snowing snowfall blizzard', weak: 'frost icy snowflakes sleet', sounds: ['cold wind', 'snow underfoot'] },
};

const TIMES: Record<string, Family> = {
  dawn: { strong: 'dawn daybreak sunrise', weak: 'cockcrow' },
  morning: { strong: 'morning', weak: 'breakfast' },
  noon: { strong: 'noon midday noonday' },
  afternoon: { strong: 'afternoon' },
  evening: { strong: 'evening dusk sunset twilight', weak: 'supper' },
  night: { strong: 'night midnight nightfall moonlight', weak: 'moon stars starlight' },
};

const MOODS: Record<string, Family> = {
  tense: { weak: 'fear afraid danger terror terrified scream screamed panic dread threat blood shouted desperate trembling fled alarm urgent' },
  peaceful: { weak: 'calm quiet peaceful gentle serene softly slept contented' },
  joyful: { weak: 'laughed laughter smiled smile joy delighted happy cheerful grinned' },
  melancholy: { weak: 'sad sorrow grief wept tears lonely mourning regret sighed' },
  mysterious: { weak: 'strange shadow mystery secret whisper whispered eerie hidden' },
  romantic: { weak: 'love kissed kiss beloved tender embrace' },
};

/** Dawn birds and night insects belong to open land, not to a ship or a city street. */
const OPEN_LAND = new Set(['forest', 'village', 'river', 'mountains', 'battlefield', 'desert']);
const TIME_SOUNDS: Record<string, string[]> = { dawn: ['dawn chorus birds'], night: ['crickets', 'night insects'] };

// Excluded before counting so that evidence density (hits per 100 content words) does not
// depend on how wordy a writer's function words are.
const STOP_WORDS = new Set(
  'a an the and or but if of to in on at by for with from as is was were be been are it its he she they we you i his her their our your my me him them us this that these those there then than so not no had have has do did would could should will shall said'.split(' '),
);

const MIN_SETTING_EVIDENCE = 4; // two place names, or four things found there
const SHIFT_RATIO = 1.5; // a setting must outweigh the other this much on one side of a change
const MIN_WEATHER_EVIDENCE = 3; // a named storm or fire mentioned in passing is not the weather

// A marker only counts at the start of a paragraph: "later that day" mid-sentence is narration,
// at a paragraph start it is a cut.
const TRANSITION_MARKERS: RegExp[] = [
  // A heading, not "Part of the crew…": a number after the word and no sentence punctuation.
  /^[ \t]*(chapter|part)[ \t]+([0-9]+|[ivxlc]+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty)\b[^\n.!?]{0,60}$/gim,
  /^[ \t]*([*#~][ \t]*){3,}$/gm,
  /^[ \t]*(the\s+(next|following)\s+(morning|day|evening|night|week|year)|later\s+that\s+(day|morning|afternoon|evening|night)|that\s+(evening|night)|(hours|days|weeks|months|years)\s+(later|passed)|meanwhile|by\s+nightfall)\b.*$/gim,
];

type Scores = Map<string, number>;
type Lexicon = Map<string, Array<{ family: string; weight: number }>>;

function buildLexicon(families: Record<string, Family>): Lexicon {
  const lexicon: Lexicon = new Map();
  for (const [family, { strong = '', weak = '' }] of Object.entries(families)) {
    for (const [words, weight] of [[strong, 2], [weak, 1]] as const) {
      for (const word of words.split(' ').filter(Boolean)) {
        lexicon.set(word, [...(lexicon.get(word) ?? []), { family, weight }]);
      }
    }
  }
  return lexicon;
}

const LEXICONS = {
  setting: buildLexicon(SETTINGS),
  weather: buildLexicon(WEATHER),
  time: buildLexicon(TIMES),
  mood: buildLexicon(MOODS),
};

interface Profile {
  setting: Scores;
  weather: Scores;
  time: Scores;
  mood: Scores;
  contentWords: number;
}

function profile(text: string): Profile {
  const tokens = (text.toLowerCase().match(/[a-z]+(?:['’][a-z]+)*/g) ?? []).filter((t) => !STOP_WORDS.has(t));
  const result: Profile = { setting: new Map(), weather: new Map(), time: new Map(), mood: new Map(), contentWords: tokens.length };
  for (const token of tokens) {
    for (const kind of ['setting', 'weather', 'time', 'mood'] as const) {
      for (const { family, weight } of lookup(LEXICONS[kind], token)) {
        result[kind].set(family, (result[kind].get(family) ?? 0) + weight);
      }
    }
  }
  return result;
}

// Plurals and simple inflections fall back to the listed form ("ships" → "ship", "cities" → "city").
function lookup(lexicon: Lexicon, token: string): Array<{ family: string; weight: number }> {
  const direct = lexicon.get(token);
  if (direct) return direct;
  if (token.endsWith('ies')) return lexicon.get(`${token.slice(0, -3)}y`) ?? [];
  if (token.endsWith('es')) return lexicon.get(token.slice(0, -2)) ?? lexicon.get(token.slice(0, -1)) ?? [];
  if (token.endsWith('s')) return lexicon.get(token.slice(0, -1)) ?? [];
  return [];
}

function ranked(scores: Scores): Array<[string, number]> {
  return [...scores].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
}

/** The top family if it has at least `min` evidence and no tie; null otherwise. */
function dominant(scores: Scores, min: number): string | null {
  const [first, second] = ranked(scores);
  if (!first || first[1] < min || (second && second[1] === first[1])) return null;
  return first[0];
}

function transitionMarkers(text: string): Set<string> {
  const found = new Set<string>();
  for (const pattern of TRANSITION_MARKERS) {
    for (const match of text.matchAll(pattern)) found.add(match[0].trim().toLowerCase().replace(/\s+/g, ' '));
  }
  return found;
}

/**
 * A marker the previous spread also has is a running page header ("Chapter 3" atop every
 * page of a PDF), not a cut.
 */
function hasNewTransition(text: string, previousText: string): boolean {
  const before = transitionMarkers(previousText);
  return [...transitionMarkers(text)].some((marker) => !before.has(marker));
}

function settingShift(current: Profile, previous: Profile): boolean {
  const now = dominant(current.setting, MIN_SETTING_EVIDENCE);
  const before = dominant(previous.setting, MIN_SETTING_EVIDENCE);
  if (!now || !before || now === before) return false;
  // Either side being clear is enough; a spread that straddles the change is muddled, and
  // requiring both sides would lose the boundary next to it.
  const clearNow = (current.setting.get(now) ?? 0) >= SHIFT_RATIO * (current.setting.get(before) ?? 0);
  const clearBefore = (previous.setting.get(before) ?? 0) >= SHIFT_RATIO * (previous.setting.get(now) ?? 0);
  return clearNow || clearBefore;
}

function confidenceOf(current: Profile, changedByMarker: boolean): number {
  const [first, second] = ranked(current.setting);
  if (!first || first[1] < MIN_SETTING_EVIDENCE) return changedByMarker ? 0.6 : 0.2;
  const margin = (first[1] - (second?.[1] ?? 0)) / first[1];
  const density = (first[1] * 100) / Math.max(1, current.contentWords);
  const value = 0.3 + 0.65 * margin * Math.min(1, density / 3);
  return Math.round(Math.min(1, changedByMarker ? Math.max(value, 0.8) : value) * 100) / 100;
}

function ambienceOf(setting: string | null, weather: string[], time: string | null): string[] {
  const sounds = [
    ...(setting ? (SETTINGS[setting]?.sounds ?? []) : []),
    ...weather.flatMap((w) => WEATHER[w]?.sounds ?? []),
    ...(time && (!setting || OPEN_LAND.has(setting)) ? (TIME_SOUNDS[time] ?? []) : []),
  ];
  const unique = [...new Set(sounds)];
  return unique.length > 0 ? unique.slice(0, 20) : ['quiet room tone'];
}

export function analyzeSpreadLocally(request: AnalysisRequest): SpreadAnalysis {
  if (request.text.includes(ANALYSIS_FAILURE_MARKER)) {
    throw new ContentAnalysisError(
      `Spread text could not be analysed: spread ${request.spreadIndex} contains the test failure marker ${ANALYSIS_FAILURE_MARKER}`,
      { retryable: false },
    );
  }
  const current = profile(request.text);
  const setting = dominant(current.setting, MIN_SETTING_EVIDENCE);
  const weather = ranked(current.weather)
    .filter(([, score]) => score >= MIN_WEATHER_EVIDENCE)
    .map(([name]) => name)
    // A storm already brings its own rain.
    .filter((name, _, all) => !(name === 'rain' && all.includes('storm')));
  const time = dominant(current.time, 1);
  // A storm on the page is tense whatever the characters say.
  if (weather.includes('storm')) current.mood.set('tense', (current.mood.get('tense') ?? 0) + 2);
  const mood = dominant(current.mood, 1);

  let sceneChanged = true;
  let byMarker = false;
  if (request.spreadIndex > 0 && request.previousText !== null) {
    byMarker = hasNewTransition(request.text, request.previousText);
    sceneChanged = byMarker || settingShift(current, profile(request.previousText));
  }
  return {
    sceneChanged,
    setting: setting ?? 'unknown',
    timeOfDay: time ?? 'unknown',
    mood: mood ?? 'neutral',
    ambience: ambienceOf(setting, weather, time),
    confidence: confidenceOf(current, byMarker),
  };
}

export function createLocalAnalysisProvider(): AnalysisProvider {
  return {
    name: 'local',
    async analyze(request: AnalysisRequest, signal?: AbortSignal): Promise<AnalysisResult> {
      signal?.throwIfAborted();
      return { analysis: analyzeSpreadLocally(request), usage: { tokens: 0 }, costUsd: 0 };
    },
  };
}
